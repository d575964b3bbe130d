"""The nftables driver's published ports (`-p`, parsed by net/ports.py) as DNAT in minirun's nft table,
and the 127/8 guard.

Where a published port must be reachable, and how:
- from another machine, via the host's address: `prerouting` DNAT for destinations that are local;
- from the host itself, via its address or 127.0.0.1: `output` DNAT, plus `route_localnet` on the bridge
  (the kernel refuses to route 127/8 otherwise) and a masquerade of 127/8 sources leaving by the bridge,
  so the container's reply comes back to the host;
- from a container on the same bridge via the host's address (hairpin): masquerade of DNATed traffic
  that goes back out of the bridge, so the reply returns through the host and is un-NATed.
The moby#45610 trap: a DNAT in prerouting also matches packets that a neighbour sends to 127.0.0.1, which
then stop being martians and are forwarded to the container. So prerouting rules never match 127/8, a
port published on 127.0.0.1 gets only an `output` rule, and a raw-prerouting guard drops 127/8 arriving
on anything but lo (as Docker does since 24.0).
"""

from __future__ import annotations

import ipaddress

from minirun import filelock, paths
from minirun.net.firewall.nftcmd import apply, delete_rules_script, list_json
from minirun.net.firewall.tags import (
    CHAIN_DNAT,
    CHAIN_GUARD,
    CHAIN_OUTPUT,
    CHAIN_SNAT,
    FAMILY,
    GUARD_TAG,
    PORT_TAG_PREFIX,
    TABLE,
    TABLE_REF,
    port_owner_tag,
    ports_network_tag,
)
from minirun.net.network import Network
from minirun.net.ports import PortMapping, needs_localnet


def mapping_of_rule(rule: dict) -> tuple[PortMapping, str] | None:
    """The mapping a DNAT rule of render_mappings publishes, and the address it leads to, from the rule as
    `nft -j` lists it; None for any other rule. "ip daddr X" names the host address; without it (only
    "fib daddr type local", and "!= 127.0.0.0/8" in prerouting) it is every local address."""
    host_ip, port, proto, target = "0.0.0.0", None, None, None
    for expr in rule.get("expr") or []:
        match, dnat = expr.get("match"), expr.get("dnat")
        if isinstance(dnat, dict):
            target = dnat
        if not isinstance(match, dict) or match.get("op") != "==":
            continue
        payload = (match.get("left") or {}).get("payload") if isinstance(match.get("left"), dict) else None
        if not isinstance(payload, dict):
            continue
        if payload.get("protocol") == "ip" and payload.get("field") == "daddr" and isinstance(match["right"], str):
            host_ip = match["right"]
        elif payload.get("protocol") in ("tcp", "udp") and payload.get("field") == "dport":
            port, proto = match.get("right"), payload["protocol"]
    if not isinstance(port, int) or target is None or not isinstance(target.get("port"), int):
        return None
    return PortMapping(host_ip, port, target["port"], proto), str(target.get("addr"))


def render_infrastructure() -> str:
    """The chains that every published port uses; idempotent (add of an existing chain is a no-op)."""
    return "\n".join(
        [
            f"add table {TABLE_REF}",
            f"add chain {TABLE_REF} {CHAIN_DNAT} {{ type nat hook prerouting priority dstnat; policy accept; }}",
            f"add chain {TABLE_REF} {CHAIN_OUTPUT} {{ type nat hook output priority -100; policy accept; }}",
            f"add chain {TABLE_REF} {CHAIN_SNAT} {{ type nat hook postrouting priority srcnat; policy accept; }}",
            "",
        ]
    )


def render_guard() -> str:
    """The 127/8 guard: one host-wide rule, needed whenever any interface routes 127/8 (net/localnet.py).
    Its chain is its own, so that adding it never touches the nat chains."""
    return "\n".join(
        [
            f"add table {TABLE_REF}",
            f"add chain {TABLE_REF} {CHAIN_GUARD} {{ type filter hook prerouting priority raw; policy accept; }}",
            f'add rule {TABLE_REF} {CHAIN_GUARD} iifname != "lo" ip daddr 127.0.0.0/8 drop comment "{GUARD_TAG}"',
            "",
        ]
    )


def render_network_rules(bridge: str, subnet: str) -> str:
    """Per network, once: hairpin and host-loopback masquerade (flushable chains are shared, so these carry
    the network's tag and are added only when missing; see firewall.ensure_ports)."""
    note = f'comment "{ports_network_tag(bridge)}"'
    return "\n".join(
        [
            f'add rule {TABLE_REF} {CHAIN_SNAT} oifname "{bridge}" ip saddr {subnet} ct status dnat masquerade {note}',
            f'add rule {TABLE_REF} {CHAIN_SNAT} oifname "{bridge}" ip saddr 127.0.0.0/8 masquerade {note}',
            "",
        ]
    )


def loopback_targets(rules: list[dict]) -> list[ipaddress.IPv4Address]:
    """From `nft -j list` items: the DNAT targets of published ports that the host reaches on 127/8 (the
    output-hook rules matching 127.x or every local address, as render_mappings writes them)."""
    found = []
    for item in rules:
        rule = item.get("rule") or {}
        if rule.get("chain") != CHAIN_OUTPUT or not str(rule.get("comment", "")).startswith(PORT_TAG_PREFIX):
            continue
        daddr: object = None
        target: object = None
        for expr in rule.get("expr", []):
            match = expr.get("match") or {}
            if (match.get("left") or {}).get("payload") == {"protocol": "ip", "field": "daddr"}:
                daddr = match.get("right")
            if "dnat" in expr:
                target = (expr["dnat"] or {}).get("addr")
        if not isinstance(target, str):
            continue
        try:
            address = ipaddress.IPv4Address(target)
        except ValueError:
            continue  # not a rule of ours
        # A match we cannot read counts as reaching loopback: route_localnet then stays on (the guard too).
        if not isinstance(daddr, str) or _is_loopback(daddr):
            found.append(address)
    return found


def _is_loopback(text: str) -> bool:
    try:
        return ipaddress.IPv4Address(text).is_loopback
    except ValueError:
        return True


def render_mappings(owner: str, address: str, mappings: tuple[PortMapping, ...]) -> str:
    """The DNAT rules of one container or pod, tagged with its id so teardown finds exactly these."""
    note = f'comment "{port_owner_tag(owner)}"'
    lines = []
    for m in mappings:
        target = f"{m.proto} dport {m.host_port} dnat ip to {address}:{m.container_port} {note}"
        if m.host_ip == "0.0.0.0":
            match_local = "fib daddr type local ip daddr != 127.0.0.0/8"
            lines.append(f"add rule {TABLE_REF} {CHAIN_DNAT} {match_local} {target}")
            lines.append(f"add rule {TABLE_REF} {CHAIN_OUTPUT} fib daddr type local {target}")
        elif m.loopback_only:
            lines.append(f"add rule {TABLE_REF} {CHAIN_OUTPUT} ip daddr {m.host_ip} {target}")
        else:
            lines.append(f"add rule {TABLE_REF} {CHAIN_DNAT} ip daddr {m.host_ip} {target}")
            lines.append(f"add rule {TABLE_REF} {CHAIN_OUTPUT} ip daddr {m.host_ip} {target}")
    return "\n".join([*lines, ""])


def _guard_rules(ruleset: list[dict]) -> list[dict]:
    return [
        i["rule"]
        for i in ruleset
        if (i.get("rule") or {}).get("comment") == GUARD_TAG
        and (i["rule"].get("family"), i["rule"].get("table"), i["rule"].get("chain")) == (FAMILY, TABLE, CHAIN_GUARD)
    ]


def guard_in_place(ruleset: list[dict]) -> bool:
    """The 127/8 guard (ports.render_guard) is in the live ruleset."""
    return bool(_guard_rules(ruleset))


def missing_guard(ruleset: list[dict], needed: bool = False) -> str:
    """The guard's script when it is missing and needed (asked for, or some interface routes 127/8: after
    an `nft flush ruleset` the bridges keep route_localnet=1); "" otherwise. The sysctls are read only
    when the guard is missing, so the steady state costs nothing."""
    from minirun.net import localnet

    if guard_in_place(ruleset) or not (needed or localnet.routing_interfaces()):
        return ""
    return render_guard()


def ensure_guard() -> bool:
    """Put back the 127/8 guard if some interface routes 127/8 and it is missing; True when it did."""
    script = missing_guard(list_json("ruleset"))
    if script:
        apply(script)
    return bool(script)


def ensure_ports(network: Network, owner: str, address: str, mappings: tuple) -> None:
    """Publish `mappings` of `owner` (a container or pod at `address`) in one transaction; then, if the host
    reaches one on 127.0.0.1, let the bridge route 127/8 - only once the guard is in place. Callers hold
    paths.ports_lock() (remove_ports switches route_localnet off under it)."""
    from minirun.net import localnet

    ruleset = list_json("ruleset")
    chains = {(i["chain"]["family"], i["chain"]["table"], i["chain"]["name"]) for i in ruleset if "chain" in i}
    script = ""
    if (FAMILY, TABLE, CHAIN_DNAT) not in chains:
        script += render_infrastructure()
    network_note = ports_network_tag(network.bridge)
    present = [i["rule"] for i in ruleset if (i.get("rule") or {}).get("comment") == network_note]
    wanted = render_network_rules(network.bridge, str(network.subnet))
    if len(present) != wanted.count("add rule"):  # missing or partly flushed: put back the whole set
        script += delete_rules_script(present)
        script += wanted
    loopback = needs_localnet(mappings)
    script += missing_guard(ruleset, needed=loopback)
    apply(script + render_mappings(owner, address, mappings))
    if loopback:
        # 127.0.0.1 -> container: the kernel routes 127/8 out of a device only with route_localnet
        localnet.set_routing(network.bridge, True)


def remove_ports(owner: str, network: Network | None = None) -> int:
    """Delete the DNAT rules tagged with `owner`; returns how many. None left is fine (no table either).
    With `network` (where the owner's ports led), route_localnet is then released (release_localnet)."""
    tag_text = port_owner_tag(owner)
    with filelock.exclusive(paths.ports_lock()):
        ruleset = list_json("ruleset")
        doomed = [i["rule"] for i in ruleset if (i.get("rule") or {}).get("comment") == tag_text]
        doomed = [r for r in doomed if (r.get("family"), r.get("table")) == (FAMILY, TABLE)]
        if doomed:
            apply(delete_rules_script(doomed))
        if network is not None:
            _release_localnet([i for i in ruleset if (i.get("rule") or {}).get("comment") != tag_text], network)
    return len(doomed)


def published_by(owner: str, address: str) -> list:
    """The port mappings the DNAT rules tagged with `owner` publish to `address` (ports.PortMapping), in
    the order they were added, each once."""
    tag_text = port_owner_tag(owner)
    found = []
    for item in list_json("ruleset"):
        rule = item.get("rule") or {}
        if rule.get("comment") != tag_text or (rule.get("family"), rule.get("table")) != (FAMILY, TABLE):
            continue
        parsed = mapping_of_rule(rule)
        if parsed is not None and parsed[1] == address and parsed[0] not in found:
            found.append(parsed[0])
    return found


def release_localnet(network: Network) -> None:
    """When no published port sends 127/8 into `network`'s subnet, its bridge stops routing 127/8; when no
    interface routes 127/8 any more, the guard goes too (in that order: never routing without the guard).
    Under paths.ports_lock(), so that a concurrent publish on the bridge never finds it switched off."""
    with filelock.exclusive(paths.ports_lock()):
        _release_localnet(list_json("ruleset"), network)


def _release_localnet(ruleset: list[dict], network: Network) -> None:
    from minirun.net import localnet

    ours = [i for i in ruleset if "rule" in i and (i["rule"].get("family"), i["rule"].get("table")) == (FAMILY, TABLE)]
    if not any(address in network.subnet for address in loopback_targets(ours)):
        localnet.set_routing(network.bridge, False)
    guards = _guard_rules(ruleset)
    if guards and not localnet.routing_interfaces():
        apply(delete_rules_script(guards))


def ports_commands(network: Network, owner: str, address: str, mappings: tuple) -> list[str]:
    """What ensure_ports applies, as commands (--explain, --dry-run): the rules, then route_localnet."""
    loopback = needs_localnet(mappings)
    script = (
        render_infrastructure()
        + render_network_rules(network.bridge, str(network.subnet))
        + (render_guard() if loopback else "")
        + render_mappings(owner, address, mappings)
    )
    commands = [f"nft -f - <<'EOF'\n{script}EOF"]
    if loopback:  # after the guard: a bridge that routes 127/8 must never be without it
        commands.append(f"sysctl -w net.ipv4.conf.{network.bridge}.route_localnet=1")
    return commands


def port_rules_count(ruleset: list[dict], owner: str) -> int:
    """How many rules in the live ruleset carry `owner`'s port tag."""
    tag = port_owner_tag(owner)
    return sum(1 for i in ruleset if (i.get("rule") or {}).get("comment") == tag)


def expected_port_rules(owner: str, address: str, mappings: tuple) -> int:
    """How many rules render_mappings writes for these mappings."""
    return sum(1 for line in render_mappings(owner, address, mappings).splitlines() if line.startswith("add rule"))
