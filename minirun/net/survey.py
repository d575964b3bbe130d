"""What is on the host for minirun's networks right now: the uplink, each network's bridge with its addresses,
ports (veths) and rules (masquerade, the resolver's fence, the accepts in a foreign DROP chain), rules left for
networks that are gone, the 127/8 guard, and the host-wide sysctls that matter. One link dump and one read of
the firewall's rules; for `doctor` and `topology` (the host side of net/bridge.py, seen from outside).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from minirun.net import links, localnet, sysctl
from minirun.net.firewall.facts import ForeignDrop, NetworkRules, RulesSurvey
from minirun.net.network import Network
from minirun.net.rtnl import Rtnl

if TYPE_CHECKING:
    from minirun.net.firewall import FirewallDriver


class Uplink(NamedTuple):
    """The link of the host's default route: where NAT sends traffic out."""

    link: links.Link  # name, mtu, ...
    addresses: list[ipaddress.IPv4Interface]
    via: str | None

    @property
    def name(self) -> str:
        return self.link.name


class BridgeSurvey(NamedTuple):
    """One network's bridge as the kernel shows it (link None: it does not exist), its ports, its rules."""

    network: Network
    link: links.Link | None
    addresses: list[ipaddress.IPv4Interface]
    ports: list[links.Link]  # every link whose master is the bridge, sorted by name
    rules: NetworkRules
    rp_filter: str | None  # net.ipv4.conf.BRIDGE.rp_filter

    @property
    def has_gateway(self) -> bool:
        return self.network.gateway_interface in self.addresses

    @property
    def masquerade(self) -> bool:
        return self.rules.masquerade


class HostSurvey(NamedTuple):
    uplink: Uplink | None
    bridges: list[BridgeSurvey]  # one per network, in the order given
    links: list[links.Link]
    rules: RulesSurvey  # leaked rules, the 127/8 guard, loopback targets
    sysctls: dict[str, str | None]  # SYSCTLS, as read
    localnet_routing: list[str]  # interfaces that route 127/8 (route_localnet=1)


# Host-wide settings doctor shows: forwarding, bridge netfilter (absent without br_netfilter), rp_filter.
SYSCTLS = ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables", "net.ipv4.conf.all.rp_filter")


def uplink(host: Rtnl, all_links: list[links.Link] | None = None) -> Uplink | None:
    """The host's uplink (the default route's device), or None without a default route."""
    all_links = links.list_links(host) if all_links is None else all_links
    default = next((r for r in links.routes(host) if r.dst.prefixlen == 0 and r.oif), None)
    link = next((lk for lk in all_links if default is not None and lk.index == default.oif), None)
    if link is None:
        return None
    return Uplink(link, links.addresses(host, link.index), default.gateway)


def survey(host: Rtnl, networks: Iterable[Network], firewall: FirewallDriver) -> HostSurvey:
    """What is on the host for `networks` (pass all that exist: rules tagged for any other are leaked) right
    now: one link dump, one read of the rules. For doctor and topology."""
    all_links = links.list_links(host)
    networks = list(networks)
    rules = firewall.rules_survey(networks)
    bridges = []
    for network in networks:
        bridge = next((lk for lk in all_links if lk.name == network.bridge and lk.kind == "bridge"), None)
        ports = sorted((lk for lk in all_links if bridge and lk.master == bridge.index), key=lambda lk: lk.name)
        addresses = links.addresses(host, bridge.index) if bridge is not None else []
        rp_filter = sysctl.read(f"net.ipv4.conf.{network.bridge}.rp_filter")
        bridges.append(BridgeSurvey(network, bridge, addresses, ports, rules.networks[network.name], rp_filter))
    sysctls = {key: sysctl.read(key) for key in SYSCTLS}
    return HostSurvey(uplink(host, all_links), bridges, all_links, rules, sysctls, localnet.routing_interfaces())


# Read-only kernel and IPAM facts about one owner's link and address, for rebuilding a record from what a
# container cannot forge (runtime/rebuild.py), and the scripts that put back a missing rule (doctor's fix lines).


def link_named(host: Rtnl, name: str) -> links.Link | None:
    """The link called `name` (of any kind), or None."""
    return links.get_link(host, name)


def peer_namespace_id(host: Rtnl, veth: str) -> int | None:
    """The id (in `host`'s netns) of the network namespace that holds the peer of `veth` (IFLA_LINK_NETNSID);
    None when there is no such link, or its peer is in the same namespace."""
    return links.peer_namespace_id(host, veth)


def namespace_id(host: Rtnl, netns_path: str) -> int | None:
    """The id `host`'s netns gives the network namespace at `netns_path` (/proc/PID/ns/net): the id a veth
    names its peer's namespace by. None when it has none, or is gone."""
    from minirun.net import netns

    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # gone meanwhile
        return None
    try:
        return netns.namespace_id(host, fd)
    finally:
        os.close(fd)


def reservations_of(ipam_root: str, owner: str) -> list[tuple[str, str]]:
    """(network, address) of every address IPAM holds for `owner` under `ipam_root`, sorted."""
    from minirun.net import ipam

    return [
        (network, address)
        for network, held in sorted(ipam.all_reservations(ipam_root).items())
        for address, reservation in sorted(held.items())
        if reservation.owner == owner
    ]


def fix_script(
    firewall: FirewallDriver, rule: str, network: Network | None = None, drop: ForeignDrop | None = None
) -> str:
    """The script a person applies (`nft -f -`) to put back a missing `rule` of `network`: "masquerade",
    "dns-guard", "forward-accepts" (into `drop`'s chain) or the host's "guard"; "" for a driver without
    rules."""
    if firewall.name != "nft":
        return ""
    from minirun.net.firewall import nft, nft_ports

    if rule == "guard":
        return nft_ports.render_guard()
    assert network is not None
    if rule == "masquerade":
        return nft.render_masquerade(network)
    if rule == "dns-guard":
        return nft.render_dns_guard(network)
    assert rule == "forward-accepts" and drop is not None
    return nft.render_forward_accepts(network, drop)
