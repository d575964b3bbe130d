"""What is on the host for minirun's networks right now: the uplink, each network's bridge with its addresses
and ports (veths), whether its masquerade is in place. One link dump and one read of the firewall's rules;
for `doctor` and `topology` (and anything else that shows or checks the host side of net/bridge.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from minirun.net import links
from minirun.net.network import Network
from minirun.net.rtnl import Rtnl

if TYPE_CHECKING:
    from minirun.net.firewall import FirewallDriver


class Uplink(NamedTuple):
    """The link of the host's default route: where NAT sends traffic out."""

    name: str
    addresses: list[ipaddress.IPv4Interface]
    via: str | None


class BridgeSurvey(NamedTuple):
    """One network's bridge as the kernel shows it, its ports and whether its masquerade is in place."""

    network: Network
    link: links.Link
    addresses: list[ipaddress.IPv4Interface]
    ports: list[links.Link]  # sorted by name
    masquerade: bool


class HostSurvey(NamedTuple):
    uplink: Uplink | None
    bridges: list[BridgeSurvey]  # networks whose bridge exists, in the order given
    links: list[links.Link]


def uplink(host: Rtnl, all_links: list[links.Link] | None = None) -> Uplink | None:
    """The host's uplink (the default route's device), or None without a default route."""
    all_links = links.list_links(host) if all_links is None else all_links
    default = next((r for r in links.routes(host) if r.dst.prefixlen == 0 and r.oif), None)
    link = next((lk for lk in all_links if default is not None and lk.index == default.oif), None)
    if link is None:
        return None
    return Uplink(link.name, links.addresses(host, link.index), default.gateway)


def survey(host: Rtnl, networks: Iterable[Network], firewall: FirewallDriver) -> HostSurvey:
    """What is on the host for `networks` right now (one link dump, one ruleset read): for doctor and topology."""
    all_links = links.list_links(host)
    networks = list(networks)
    masquerading = firewall.masquerading(networks)
    bridges = []
    for network in networks:
        bridge = next((lk for lk in all_links if lk.name == network.bridge), None)
        if bridge is None:
            continue
        ports = sorted((lk for lk in all_links if lk.master == bridge.index), key=lambda lk: lk.name)
        addresses = links.addresses(host, bridge.index)
        bridges.append(BridgeSurvey(network, bridge, addresses, ports, network.name in masquerading))
    return HostSurvey(uplink(host, all_links), bridges, all_links)
