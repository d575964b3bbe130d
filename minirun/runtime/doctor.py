"""`minirun doctor`: the seed's "Common Mistakes" table, checked against the live host and one container or
pod. Every finding says what is wrong, why it matters and the command that fixes it; --fix applies the
fixes that are minirun's own business (its bridge, its rules, its containers' links), never a foreign
tool's settings."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from minirun import jsonstore, paths
from minirun.net import firewall, links, sysctl
from minirun.net import firewall_tags as tags
from minirun.net.network import Network, default_network, has_resolver, user_networks
from minirun.net.rtnl import Rtnl
from minirun.runtime import model, query, store
from minirun.runtime.model import ContainerStatus, is_live


class Finding(NamedTuple):
    ok: bool
    what: str
    why: str = ""
    fix: str = ""  # the command a person would type
    repair: Callable[[], object] | None = None  # minirun's own fix, for --fix
    note: bool = False  # informational: not a failure


def _ok(what: str) -> Finding:
    return Finding(True, what)


def check_host(host: Rtnl, network: Network) -> list[Finding]:
    findings = []
    bridge = links.get_link(host, network.bridge)
    users = [r for r in store.all_records() if r.get("status") == ContainerStatus.RUNNING] or _pods()
    if bridge is None:
        findings.append(
            Finding(
                not users,
                f"bridge {network.bridge} does not exist" + (" but containers use it" if users else " (yet)"),
                "every container's veth hangs on it: without it nothing leaves the containers",
                f"ip link add {network.bridge} type bridge && ip link set {network.bridge} up",
            )
        )
    else:
        findings.append(
            _ok(f"bridge {network.bridge} is up")
            if bridge.up
            else Finding(
                False,
                f"bridge {network.bridge} is down",
                "a bridge that is down forwards nothing: containers reach neither each other nor the gateway",
                f"ip link set {network.bridge} up",
                lambda: links.set_up(host, bridge.index, network.bridge),
            )
        )
        has_gateway = network.gateway_interface in links.addresses(host, bridge.index)
        findings.append(
            _ok(f"{network.bridge} has the gateway address {network.gateway_interface}")
            if has_gateway
            else Finding(
                False,
                f"{network.bridge} lacks the gateway address {network.gateway_interface}",
                "containers route everything via the gateway: with no one answering, nothing leaves them",
                f"ip addr add {network.gateway_interface} dev {network.bridge}",
                lambda: links.ensure_address(host, bridge.index, network.gateway_interface, network.bridge),
            )
        )
    if bridge is None and not users:
        # Nothing of minirun's is in use: forwarding and NAT are set up by the next run, nothing is broken.
        return [
            *findings,
            Finding(True, "minirun is not in use on this host: the next run sets up forwarding and NAT", note=True),
            *_leak_findings(host, network, firewall.list_json("ruleset")),
        ]
    forward = sysctl.read("net.ipv4.ip_forward")
    findings.append(
        _ok("IP forwarding is on (net.ipv4.ip_forward=1)")
        if forward == "1"
        else Finding(
            False,
            "IP forwarding is off (net.ipv4.ip_forward=0)",
            "the host drops packets it would have to route from minirun0 to its uplink: no way out",
            "sysctl -w net.ipv4.ip_forward=1",
            lambda: sysctl.write("net.ipv4.ip_forward", "1"),
        )
    )
    ruleset = firewall.list_json("ruleset")
    findings.append(
        _ok(f"NAT: the masquerade rule for {network.subnet} is in place")
        if network.internal or firewall.masquerade_in_place(ruleset, network)
        else Finding(
            False,
            f"NAT: no masquerade rule for {network.subnet}",
            "replies to a container's private source address never find their way back from outside",
            f"nft -f - <<'EOF'\n{firewall.render_masquerade(network)}EOF",
            lambda: firewall.ensure_network(network),
        )
    )
    if has_resolver(network):
        findings.append(
            _ok(f"DNS: only {network.subnet} on {network.bridge} may query {network.gateway}:53")
            if firewall.dns_guard_in_place(ruleset, network)
            else Finding(
                False,
                f"DNS: no firewall rules keep other networks off the resolver at {network.gateway}:53",
                "the resolver refuses them too, but the firewall is the first wall: without it every network "
                "and neighbour reaches the resolver's socket",
                f"nft -f - <<'EOF'\n{firewall.render_dns_guard(network)}EOF",
                lambda: firewall.ensure_network(network),
            )
        )
    drop = firewall.find_foreign_drop(ruleset)
    if drop is not None:
        ours = firewall.rule_handles(firewall.rules_in_chain(ruleset, drop), tags.network_tag(network))
        findings.append(
            _ok(f"forward DROP policy ({drop.family} {drop.table}): minirun's accepts are in {drop.chain}")
            if ours
            else Finding(
                False,
                f"a forward chain drops by default ({drop.family} {drop.table}, e.g. Docker) and {drop.chain} has "
                f"no accept for {network.bridge}",
                "with bridge netfilter even container-to-container traffic on one bridge crosses that chain",
                f"nft -f - <<'EOF'\n{firewall.render_forward_accepts(network, drop)}EOF",
                lambda: firewall.ensure_network(network),
            )
        )
    bridge_nf = sysctl.read("net.bridge.bridge-nf-call-iptables")
    if bridge_nf is not None:
        findings.append(
            Finding(
                True,
                f"bridge netfilter is {'on' if bridge_nf == '1' else 'off'} (net.bridge.bridge-nf-call-iptables="
                f"{bridge_nf})",
                "when on, packets between two ports of a bridge also pass the iptables/nft forward hook",
                note=True,
            )
        )
    rp_filter = max(
        sysctl.read("net.ipv4.conf.all.rp_filter") or "0",
        sysctl.read(f"net.ipv4.conf.{network.bridge}.rp_filter") or "0",
    )
    findings.append(
        Finding(
            True,
            f"reverse-path filter: {'strict' if rp_filter == '1' else 'loose' if rp_filter == '2' else 'off'} "
            f"(rp_filter={rp_filter})",
            "strict mode drops packets arriving where the reply would not leave: fine for minirun's single "
            "bridge, a trap once containers get a second route",
            note=True,
        )
    )
    findings += _mtu_findings(host)
    findings += _leak_findings(host, network, ruleset)
    return findings


def _pods() -> list[dict[str, Any]]:

    return store.all_pods()


def _uplink(host: Rtnl) -> links.Link | None:
    default = next((r for r in links.routes(host) if r.dst.prefixlen == 0 and r.oif), None)
    if default is None:
        return None
    return next((lk for lk in links.list_links(host) if lk.index == default.oif), None)


def _mtu_findings(host: Rtnl) -> list[Finding]:
    uplink = _uplink(host)
    if uplink is None:
        return [Finding(True, "no default route on the host: containers can reach only this machine", note=True)]
    findings = []
    for record in store.all_records():
        mtu = (record.get("network") or {}).get("mtu")
        if record.get("status") == ContainerStatus.RUNNING and mtu and mtu > uplink.mtu:
            findings.append(
                Finding(
                    False,
                    f"container {record['name']} has MTU {mtu}, larger than the uplink {uplink.name}'s {uplink.mtu}",
                    "big packets leaving through the uplink must fragment or are dropped (PMTU black holes)",
                    f"minirun run --mtu {uplink.mtu} ...",
                )
            )
    return findings or [_ok(f"no container's MTU exceeds the uplink {uplink.name}'s ({uplink.mtu})")]


def _damaged_pod_names() -> list[str]:
    """Pods whose record cannot be read: set aside by reconcile, or not yet (doctor does not reconcile)."""

    damaged = set(store.damaged_pod_names())
    for name in jsonstore.record_names(paths.pods_dir()):
        try:
            store.load_pod(name)
        except store.DamagedPod:
            damaged.add(name)
    return sorted(damaged)


def _leak_findings(host: Rtnl, network: Network, ruleset: list[dict]) -> list[Finding]:
    """Veths, address records and rules that nothing owns. As in reconcile.py: a damaged container record is
    never evidence that what its id holds is free, and a damaged pod record hides which veth and address are
    the pod's, so then none is called leaked (`minirun gc --damaged` shows and releases them)."""
    findings = []
    owners = {r["id"] for r in store.all_records() if is_live(r)} | {p["id"] for p in _pods()}
    owners |= set(store.damaged_records())
    expected = {links.host_veth_name(owner) for owner in owners}
    bridge = links.get_link(host, network.bridge)
    damaged_pods = _damaged_pod_names()
    if damaged_pods:
        findings.append(
            Finding(
                False,
                (
                    f"the record of pod {damaged_pods[0]} is damaged"
                    if len(damaged_pods) == 1
                    else f"the records of pods {', '.join(damaged_pods)} are damaged"
                )
                + f": veths and address records on {network.bridge} are not checked for leaks",
                "a damaged record hides which veth and address are the pod's: removing them could cut off a pod "
                "that still runs",
                "minirun gc --damaged   # shows what it may hold; with -f releases it",
            )
        )
    elif bridge is not None:
        for link in links.list_links(host):
            if link.master == bridge.index and link.kind == "veth" and link.name not in expected:
                findings.append(
                    Finding(
                        False,
                        f"leaked veth {link.name} on {network.bridge}: no container or pod owns it",
                        "it holds a bridge port and, if its peer lives on, a namespace nobody manages",
                        f"ip link delete {link.name}",
                        lambda name=link.name: links.delete_link(host, name),
                    )
                )
    from minirun.net import ipam

    pool = ipam.AddressStore(paths.ipam_dir(network.name))
    for address, held in pool.reservations().items():
        if held.owner not in owners and not damaged_pods:
            findings.append(
                Finding(
                    False,
                    f"leaked address record {address} (owner {held.owner} is gone)",
                    "the address can never be handed out again",
                    f"rm {os.path.join(pool.directory, address)}",
                    lambda a=address, o=held.owner: pool.release(a, o),
                )
            )
    from minirun.net.network import all_networks

    known = {tags.network_tag(n) for n in all_networks()}
    for item in ruleset:
        rule = item.get("rule") or {}
        comment = rule.get("comment") or ""
        if comment.startswith(tags.NETWORK_TAG_PREFIX) and comment not in known:
            where = f"{rule['family']} {rule['table']} {rule['chain']}"
            findings.append(
                Finding(
                    False,
                    f"leaked rule in {where} for a network that no longer exists ({comment})",
                    "it keeps accepting or translating traffic for addresses minirun no longer manages",
                    f"nft delete rule {where} handle {rule['handle']}",
                    lambda w=where, h=rule["handle"]: firewall.apply(f"delete rule {w} handle {h}\n"),
                )
            )
    if len(findings) == 0:
        findings.append(_ok("no leaked veths, address records or rules"))
    return findings


def check_target(ref: str, host: Rtnl, network: Network) -> list[Finding]:
    """Inside one container or pod: loopback, eth0, its address, the default route; and its host veth."""
    from minirun.net.netns import rtnl_in

    pod = store.load_pod(ref)
    if pod is not None:
        label, netns, net = f"pod {ref}", pod["pins"]["net"], pod.get("network") or {}
        enter = f"ip netns exec {os.path.basename(netns)}"
    else:
        record = query.find(ref)
        if record.get("pod"):
            return check_target(record["pod"], host, network)
        if not model.is_running(record):
            return [Finding(False, f"container {record['name']} is not running", "there is nothing to check inside")]
        label, netns, net = f"container {record['name']}", f"/proc/{record['pid']}/ns/net", record.get("network") or {}
        enter = f"nsenter --net={netns}"
    inside = rtnl_in(netns)
    findings = []
    lo = links.get_link(inside, "lo")
    findings.append(
        _ok(f"{label}: loopback is up")
        if lo and lo.up
        else Finding(
            False,
            f"{label}: loopback is down",
            "127.0.0.1 and localhost do not work: members of a pod cannot talk to each other",
            f"{enter} ip link set lo up",
            lambda: links.set_up(inside, 1, "lo"),
        )
    )
    if not net:
        return findings
    address = ipaddress.IPv4Interface(net["address"])
    eth0 = links.get_link(inside, "eth0")
    if eth0 is None:
        return [
            *findings,
            Finding(
                False,
                f"{label}: eth0 is missing",
                "there is no way out of the namespace",
                f"minirun rm -f {ref}  # and run it again",
            ),
        ]
    findings.append(
        _ok(f"{label}: eth0 is up")
        if eth0.up
        else Finding(
            False,
            f"{label}: eth0 is down",
            "a link that is down carries nothing",
            f"{enter} ip link set eth0 up",
            lambda: links.set_up(inside, eth0.index, "eth0"),
        )
    )
    has_address = address in links.addresses(inside, eth0.index)
    findings.append(
        _ok(f"{label}: eth0 has {address}")
        if has_address
        else Finding(
            False,
            f"{label}: eth0 lacks its address {address}",
            "without an address the container can neither send from nor be reached at it",
            f"{enter} ip addr add {address} dev eth0",
            lambda: links.ensure_address(inside, eth0.index, address, "eth0"),
        )
    )
    gateway = net.get("gateway", str(network.gateway))
    has_default = any(r.dst.prefixlen == 0 and r.gateway == gateway for r in links.routes(inside))
    findings.append(
        _ok(f"{label}: default route via {gateway}")
        if has_default
        else Finding(
            False,
            f"{label}: no default route via {gateway}",
            "only its own subnet is reachable: everything else gets 'Network is unreachable'",
            f"{enter} ip route add default via {gateway}",
            lambda: links.add_default_route(inside, ipaddress.IPv4Address(gateway), eth0.index, "eth0"),
        )
    )
    veth = links.get_link(host, net.get("host_veth", ""))
    bridge = links.get_link(host, network.bridge)
    if veth is None:
        findings.append(
            Finding(
                False,
                f"{label}: host veth {net.get('host_veth')} is missing",
                "eth0's other end is gone: the namespace is cut off",
                f"minirun rm -f {ref}",
            )
        )
    else:
        findings.append(
            _ok(f"{label}: host veth {veth.name} is up")
            if veth.up
            else Finding(
                False,
                f"{label}: host veth {veth.name} is down",
                "the cable is unplugged on the host side",
                f"ip link set {veth.name} up",
                lambda: links.set_up(host, veth.index, veth.name),
            )
        )
        on_bridge = bridge is not None and veth.master == bridge.index
        findings.append(
            _ok(f"{label}: {veth.name} is a port of {network.bridge}")
            if on_bridge
            else Finding(
                False,
                f"{label}: {veth.name} is not attached to {network.bridge}",
                "its frames never reach the bridge, the gateway or other containers",
                f"ip link set {veth.name} master {network.bridge}",
            )
        )
    return findings  # `inside` stays open: the repairs use it


def check_localnet() -> list[Finding]:
    """Host-wide: an interface that routes 127/8 (route_localnet=1, left by a port published on 127.0.0.1)
    needs the 127/8 guard; a minirun bridge with no such port left should not route 127/8 at all."""
    from minirun.net import localnet

    routing = localnet.routing_interfaces()
    if not routing:
        return [_ok("no interface routes 127.0.0.0/8 (route_localnet=0 everywhere)")]
    ruleset = firewall.list_json("ruleset")
    findings = [
        _ok(f"the 127/8 guard is in place ({', '.join(routing)} route 127.0.0.0/8)")
        if firewall.guard_in_place(ruleset)
        else Finding(
            False,
            f"{', '.join(routing)} route 127.0.0.0/8 (route_localnet=1) but the 127/8 guard is missing",
            "a container can then reach the host's 127.0.0.1 services with hand-built packets (CVE-2020-8558); "
            "an `nft flush ruleset` (a firewall reload) removes the guard",
            f"nft -f - <<'EOF'\n{firewall.render_guard()}EOF",
            firewall.ensure_guard,
        )
    ]
    targets = firewall.loopback_targets(ruleset)
    for network in [default_network(), *user_networks()]:
        if network.bridge in routing and not any(address in network.subnet for address in targets):
            findings.append(
                Finding(
                    False,
                    f"{network.bridge} routes 127.0.0.0/8 but no port is published on 127.0.0.1 to {network.subnet}",
                    "route_localnet is needed only for such a port; left on, it leans on the guard alone",
                    f"sysctl -w net.ipv4.conf.{network.bridge}.route_localnet=0",
                    lambda net=network: firewall.release_localnet(net),
                )
            )
    return findings


def diagnose(ref: str | None) -> list[Finding]:
    from minirun.net import rtnl

    host = rtnl.Rtnl()  # stays open: the repairs use it
    findings = check_host(host, default_network())
    for network in user_networks():
        findings += [f for f in check_host(host, network) if not f.note]
    findings += check_localnet()
    if ref is not None:
        findings += check_target(ref, host, _network_of(ref))
    return findings


def _network_of(ref: str) -> Network:
    from minirun.net.network import resolve

    owner = store.load_pod(ref)
    if owner is None:
        record = query.find(ref)
        owner = store.load_pod(record["pod"]) if record.get("pod") else record
    name = ((owner or {}).get("network") or {}).get("name")
    return resolve(name) if name else default_network()


def repair(findings: list[Finding]) -> list[str]:
    done = []
    for finding in findings:
        if not finding.ok and finding.repair is not None:
            finding.repair()
            done.append(finding.what)
    return done
