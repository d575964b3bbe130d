"""`minirun doctor` on the host side of one network: its bridge and gateway address, IP forwarding, its rules
(NAT, the resolver's fence, the accepts in a foreign DROP chain), the sysctls worth knowing, the uplink's MTU;
and, host-wide, the 127/8 guard. Every fact comes from one net.survey.survey() of the host."""

from __future__ import annotations

from typing import Any

from minirun.net.attachment import FirewallDriver, Rtnl, ensure_address, set_up
from minirun.net.bridge import ensure_forwarding
from minirun.net.network import has_resolver
from minirun.net.survey import BridgeSurvey, HostSurvey, Uplink, fix_script
from minirun.runtime import store
from minirun.runtime.doctor_finding import Finding, nft_fix, ok
from minirun.runtime.doctor_leaks import leak_findings
from minirun.runtime.model import ContainerStatus


def check_host(host: Rtnl, firewall: FirewallDriver, survey: HostSurvey, bridge: BridgeSurvey) -> list[Finding]:
    users = [r for r in store.all_records() if r.get("status") == ContainerStatus.RUNNING] or store.all_pods()
    findings = _bridge_findings(host, bridge, users)
    if bridge.link is None and not users:
        # Nothing of minirun's is in use: forwarding and NAT are set up by the next run, nothing is broken.
        return [
            *findings,
            Finding(True, "minirun is not in use on this host: the next run sets up forwarding and NAT", note=True),
            *leak_findings(host, firewall, survey, bridge),
        ]
    findings.append(
        ok("IP forwarding is on (net.ipv4.ip_forward=1)")
        if survey.sysctls["net.ipv4.ip_forward"] == "1"
        else Finding(
            False,
            "IP forwarding is off (net.ipv4.ip_forward=0)",
            "the host drops packets it would have to route from minirun0 to its uplink: no way out",
            "sysctl -w net.ipv4.ip_forward=1",
            ensure_forwarding,
        )
    )
    findings += _rule_findings(firewall, bridge)
    findings += _sysctl_notes(survey, bridge)
    findings += _mtu_findings(survey.uplink)
    findings += leak_findings(host, firewall, survey, bridge)
    return findings


def _bridge_findings(host: Rtnl, bridge: BridgeSurvey, users: list[dict[str, Any]]) -> list[Finding]:
    network, link = bridge.network, bridge.link
    if link is None:
        return [
            Finding(
                not users,
                f"bridge {network.bridge} does not exist" + (" but containers use it" if users else " (yet)"),
                "every container's veth hangs on it: without it nothing leaves the containers",
                f"ip link add {network.bridge} type bridge && ip link set {network.bridge} up",
            )
        ]
    up = (
        ok(f"bridge {network.bridge} is up")
        if link.up
        else Finding(
            False,
            f"bridge {network.bridge} is down",
            "a bridge that is down forwards nothing: containers reach neither each other nor the gateway",
            f"ip link set {network.bridge} up",
            lambda: set_up(host, link.index, network.bridge),
        )
    )
    gateway = (
        ok(f"{network.bridge} has the gateway address {network.gateway_interface}")
        if bridge.has_gateway
        else Finding(
            False,
            f"{network.bridge} lacks the gateway address {network.gateway_interface}",
            "containers route everything via the gateway: with no one answering, nothing leaves them",
            f"ip addr add {network.gateway_interface} dev {network.bridge}",
            lambda: ensure_address(host, link.index, network.gateway_interface, network.bridge),
        )
    )
    return [up, gateway]


def _rule_findings(firewall: FirewallDriver, bridge: BridgeSurvey) -> list[Finding]:
    network, rules = bridge.network, bridge.rules

    def restore() -> None:
        firewall.ensure_network(network)

    findings = [
        ok(f"NAT: the masquerade rule for {network.subnet} is in place")
        if network.internal or rules.masquerade
        else Finding(
            False,
            f"NAT: no masquerade rule for {network.subnet}",
            "replies to a container's private source address never find their way back from outside",
            nft_fix(fix_script(firewall, "masquerade", network)),
            restore,
        )
    ]
    if has_resolver(network):
        findings.append(
            ok(f"DNS: only {network.subnet} on {network.bridge} may query {network.gateway}:53")
            if rules.dns_guard
            else Finding(
                False,
                f"DNS: no firewall rules keep other networks off the resolver at {network.gateway}:53",
                "the resolver refuses them too, but the firewall is the first wall: without it every network "
                "and neighbour reaches the resolver's socket",
                nft_fix(fix_script(firewall, "dns-guard", network)),
                restore,
            )
        )
    drop = rules.foreign_drop
    if drop is not None:
        findings.append(
            ok(f"forward DROP policy ({drop.family} {drop.table}): minirun's accepts are in {drop.chain}")
            if rules.foreign_accepts
            else Finding(
                False,
                f"a forward chain drops by default ({drop.family} {drop.table}, e.g. Docker) and {drop.chain} has "
                f"no accept for {network.bridge}",
                "with bridge netfilter even container-to-container traffic on one bridge crosses that chain",
                nft_fix(fix_script(firewall, "forward-accepts", network, drop)),
                restore,
            )
        )
    return findings


def _sysctl_notes(survey: HostSurvey, bridge: BridgeSurvey) -> list[Finding]:
    notes = []
    bridge_nf = survey.sysctls["net.bridge.bridge-nf-call-iptables"]
    if bridge_nf is not None:
        notes.append(
            Finding(
                True,
                f"bridge netfilter is {'on' if bridge_nf == '1' else 'off'} (net.bridge.bridge-nf-call-iptables="
                f"{bridge_nf})",
                "when on, packets between two ports of a bridge also pass the iptables/nft forward hook",
                note=True,
            )
        )
    rp_filter = max(survey.sysctls["net.ipv4.conf.all.rp_filter"] or "0", bridge.rp_filter or "0")
    mode = "strict" if rp_filter == "1" else "loose" if rp_filter == "2" else "off"
    notes.append(
        Finding(
            True,
            f"reverse-path filter: {mode} (rp_filter={rp_filter})",
            "strict mode drops packets arriving where the reply would not leave: fine for minirun's single "
            "bridge, a trap once containers get a second route",
            note=True,
        )
    )
    return notes


def _mtu_findings(uplink: Uplink | None) -> list[Finding]:
    if uplink is None:
        return [Finding(True, "no default route on the host: containers can reach only this machine", note=True)]
    mtu_limit, findings = uplink.link.mtu, []
    for record in store.all_records():
        mtu = (record.get("network") or {}).get("mtu")
        if record.get("status") == ContainerStatus.RUNNING and mtu and mtu > mtu_limit:
            findings.append(
                Finding(
                    False,
                    f"container {record['name']} has MTU {mtu}, larger than the uplink {uplink.name}'s {mtu_limit}",
                    "big packets leaving through the uplink must fragment or are dropped (PMTU black holes)",
                    f"minirun run --mtu {mtu_limit} ...",
                )
            )
    return findings or [ok(f"no container's MTU exceeds the uplink {uplink.name}'s ({mtu_limit})")]


def check_localnet(firewall: FirewallDriver, survey: HostSurvey) -> list[Finding]:
    """Host-wide: an interface that routes 127/8 (route_localnet=1, left by a port published on 127.0.0.1)
    needs the 127/8 guard; a minirun bridge with no such port left should not route 127/8 at all."""
    routing = survey.localnet_routing
    if not routing:
        return [ok("no interface routes 127.0.0.0/8 (route_localnet=0 everywhere)")]
    findings = [
        ok(f"the 127/8 guard is in place ({', '.join(routing)} route 127.0.0.0/8)")
        if survey.rules.guard
        else Finding(
            False,
            f"{', '.join(routing)} route 127.0.0.0/8 (route_localnet=1) but the 127/8 guard is missing",
            "a container can then reach the host's 127.0.0.1 services with hand-built packets (CVE-2020-8558); "
            "an `nft flush ruleset` (a firewall reload) removes the guard",
            nft_fix(fix_script(firewall, "guard")),
            firewall.ensure_guard,
        )
    ]
    targets = survey.rules.loopback_targets
    for network in (bridge.network for bridge in survey.bridges):
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
