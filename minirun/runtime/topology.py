"""`minirun topology`: the live host drawn as the seed's figures draw it - the bridge with its gateway, its
veth ports, the container or pod at the other end of each with its eth0 address, and the NAT exit."""

from __future__ import annotations

from typing import Any

from minirun.net.attachment import host_veth_name, open_host, select_driver
from minirun.net.network import all_networks
from minirun.net.survey import BridgeSurvey, survey
from minirun.runtime import query, store
from minirun.runtime.model import ContainerStatus


def collect() -> dict[str, Any]:
    """What the kernel and the records say right now, as one JSON-able document."""
    records = [r for r in store.all_records() if r.get("status") in (ContainerStatus.RUNNING, ContainerStatus.CREATING)]
    owners = _owners(records)
    with open_host() as host:
        seen = survey(host, all_networks(), select_driver())
    uplink = seen.uplink
    elsewhere = [
        {"name": r.get("name"), "id": r["id"], "network": r.get("network_mode"), "status": query.status_text(r)}
        for r in records
        if r.get("network_mode") in ("none", "host")
    ]
    return {
        "uplink": (
            None
            if uplink is None
            else {"name": uplink.name, "addresses": [str(a) for a in uplink.addresses], "via": uplink.via}
        ),
        "bridges": [_bridge(bridge, owners) for bridge in seen.bridges if bridge.link is not None],
        "unbridged": elsewhere,
    }


def _owners(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What is at the other end of each host veth: {veth name: the container or pod}."""
    owners: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("network_mode") == "bridge":
            owners[host_veth_name(record["id"])] = {
                "kind": "container",
                "name": record.get("name"),
                "id": record["id"],
                "address": (record.get("network") or {}).get("address"),
                "status": query.status_text(record),
                "ports": _ports(record),
            }
    for pod in store.all_pods():
        owners[host_veth_name(pod["id"])] = {
            "kind": "pod",
            "name": pod["name"],
            "id": pod["id"],
            "address": (pod.get("network") or {}).get("address"),
            "netns": pod.get("pins", {}).get("net"),
            "ports": _ports(pod),
            "members": [
                {"name": m.get("name"), "id": m["id"], "status": query.status_text(m)}
                for m in store.pod_members(pod["name"])
            ],
        }
    return owners


def _bridge(bridge: BridgeSurvey, owners: dict[str, dict[str, Any]]) -> dict[str, Any]:
    network, link = bridge.network, bridge.link
    assert link is not None
    return {
        "name": link.name,
        "network": network.name,
        "gateway": [str(a) for a in bridge.addresses],
        "up": link.up,
        "nat": {"masquerade": bridge.masquerade, "internal": network.internal, "subnet": str(network.subnet)},
        "ports": [{"veth": port.name, "up": port.up, "owner": owners.get(port.name)} for port in bridge.ports],
    }


def _ports(owner: dict[str, Any]) -> list[str]:
    from minirun.net.ports import PortMapping

    return [str(PortMapping(*m)) for m in owner.get("ports") or []]


def render_text(doc: dict[str, Any]) -> str:
    lines = ["host"]
    uplink = doc.get("uplink")
    if uplink:
        via = f" via {uplink['via']}" if uplink.get("via") else ""
        lines.append(f"├── uplink {uplink['name']} {' '.join(uplink['addresses'])} (default route{via})")
    else:
        lines.append("├── no uplink (no default route): containers reach only this machine")
    for b_index, bridge in enumerate(doc["bridges"]):
        last_bridge = b_index == len(doc["bridges"]) - 1 and not doc["unbridged"]
        lines += _bridge_text(bridge, uplink, last_bridge)
    for index, container in enumerate(doc["unbridged"]):
        branch = "└──" if index == len(doc["unbridged"]) - 1 else "├──"
        lines.append(
            f"{branch} container {container['name']} ({container['id']}) --network {container['network']} "
            f"{container['status']}"
        )
    return "\n".join(lines)


def _bridge_text(bridge: dict[str, Any], uplink: dict[str, Any] | None, last_bridge: bool) -> list[str]:
    branch, stem = ("└──", "    ") if last_bridge else ("├──", "│   ")
    gateway = " ".join(bridge["gateway"]) or "no gateway address"
    lines = [
        f"{branch} {bridge['name']} (bridge, network {bridge['network']}) {gateway} {'up' if bridge['up'] else 'DOWN'}"
    ]
    nat = bridge["nat"]
    exit_to = f" -> {uplink['name']}" if uplink else ""
    nat_text = (
        "internal: no way out" if nat.get("internal") else ("masquerade" if nat["masquerade"] else "NO masquerade rule")
    )
    lines.append(f"{stem}│   NAT exit: {nat['subnet']} {nat_text}{exit_to}")
    ports = bridge["ports"]
    if not ports:
        lines.append(f"{stem}└── (no ports)")
    for p_index, port in enumerate(ports):
        lines += _port_text(port, stem, p_index == len(ports) - 1)
    return lines


def _port_text(port: dict[str, Any], stem: str, last: bool) -> list[str]:
    pb, ps = ("└──", "    ") if last else ("├──", "│   ")
    owner = port["owner"]
    state_text = "" if port["up"] else " DOWN"
    if owner is None:
        return [f"{stem}{pb} {port['veth']}{state_text} ══ ? (no container or pod: leaked)"]
    address = owner.get("address") or "?"
    published = f"  published {', '.join(owner['ports'])}" if owner.get("ports") else ""
    if owner["kind"] == "container":
        return [
            f"{stem}{pb} {port['veth']}{state_text} ══ eth0 {address}  container {owner['name']} "
            f"({owner['id']}) {owner['status']}{published}"
        ]
    lines = [
        f"{stem}{pb} {port['veth']}{state_text} ══ eth0 {address}  pod {owner['name']} "
        f"({owner['id']}, netns {owner.get('netns')}){published}"
    ]
    members = owner["members"]
    if not members:
        lines.append(f"{stem}{ps}└── (no members)")
    for m_index, member in enumerate(members):
        mb = "└──" if m_index == len(members) - 1 else "├──"
        lines.append(
            f"{stem}{ps}{mb} member {member['name']} ({member['id']}) {member['status']} "
            "- shares the pod's eth0 and localhost"
        )
    return lines


def render_dot(doc: dict[str, Any]) -> str:
    def q(text: str) -> str:
        return '"' + str(text).replace('"', '\\"').replace("\n", "\\n") + '"'

    out = ["graph minirun {", "  rankdir=TB; node [shape=box, fontname=monospace];"]
    uplink = doc.get("uplink")
    if uplink:
        out.append(f"  uplink [label={q('uplink ' + uplink['name'] + chr(10) + ' '.join(uplink['addresses']))}];")
    for bridge in doc["bridges"]:
        bid = q(bridge["name"])
        label = f"{bridge['name']} (bridge)\n{' '.join(bridge['gateway'])}"
        out.append(f"  {bid} [label={q(label)}, shape=box3d];")
        if uplink:
            nat = "masquerade" if bridge["nat"]["masquerade"] else "no NAT"
            out.append(f"  {bid} -- uplink [label={q(nat)}];")
        for port in bridge["ports"]:
            owner = port["owner"]
            node = q(port["veth"])
            out.append(f"  {node} [label={q(port['veth'])}, shape=ellipse];")
            out.append(f"  {bid} -- {node};")
            if owner is None:
                continue
            oid = q(owner["id"])
            title = f"{owner['kind']} {owner['name']}\neth0 {owner.get('address') or '?'}"
            out.append(f"  {oid} [label={q(title)}];")
            out.append(f"  {node} -- {oid} [label=veth];")
            for member in owner.get("members", []):
                mid = q(member["id"])
                out.append(f"  {mid} [label={q('member ' + str(member['name']))}, shape=note];")
                out.append(f"  {oid} -- {mid} [style=dashed];")
    out.append("}")
    return "\n".join(out)
