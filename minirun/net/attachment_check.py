"""Is an attachment still what was made? Every difference, first problem first: CNI CHECK, doctor.

Read lazily (a generator): a caller that stops at the first problem asks the kernel nothing more.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from minirun.net import links, sysctl
from minirun.net.ipam import AddressStore
from minirun.net.network import Network
from minirun.net.rtnl import Rtnl

if TYPE_CHECKING:
    from minirun.net.firewall import FirewallDriver
    from minirun.net.ports import PortMapping


class PortRules(NamedTuple):
    """One owner's published ports as the firewall tags them: `owner` (the tag), `label` (for messages),
    the `address` they lead to and the `mappings`."""

    owner: str
    label: str
    address: str
    mappings: tuple[PortMapping, ...]


class Expected(NamedTuple):
    """What an attachment was made with, as its record tells it (CNI CHECK, doctor)."""

    network: Network
    ifname: str
    netns: str  # how messages name the netns
    address: ipaddress.IPv4Interface
    host_veth: str
    ipam_owner: str
    mac: str | None = None
    routes: tuple[tuple[str, str], ...] = ()  # (dst, gateway) as text
    gateway: bool = True  # the bridge holds the gateway address and the host forwards
    masquerade: bool = False
    ports: PortRules | None = None
    bridge: str | None = None  # the bridge the record names, when not the network's own


def verify(
    expected: Expected, host: Rtnl, container: Rtnl, store: AddressStore, firewall: FirewallDriver
) -> Iterator[str]:
    """Every way the attachment differs from what was made, first problem first, read lazily: a caller
    that stops at the first (CNI CHECK) asks the kernel nothing more."""
    e = expected
    link = links.get_link(container, e.ifname)
    if link is None:
        yield f"{e.ifname} is missing in {e.netns}"
        return
    if not link.up:
        yield f"{e.ifname} is down in {e.netns}"
    if e.mac and link.address != e.mac:
        yield f"{e.ifname} has MAC {link.address}, not {e.mac}"
    if e.address not in links.addresses(container, link.index):
        yield f"{e.ifname} in {e.netns} lacks its address {e.address}"
    present = {(str(r.dst), r.gateway, r.oif) for r in links.routes(container)}
    for dst, gw in e.routes:
        if (dst, gw, link.index) not in present:
            yield f"the route {dst} via {gw} dev {e.ifname} is missing in {e.netns}"
    if store.owner_of(e.address.ip) != e.ipam_owner:
        yield f"the IPAM record of {e.address.ip} is missing or held by someone else"
    yield from _verify_host_side(e, host)
    yield from firewall.problems(e.network, e.masquerade, e.ports)


def _verify_host_side(e: Expected, host: Rtnl) -> Iterator[str]:
    name = e.bridge or e.network.bridge
    bridge = links.get_link(host, name)
    if bridge is None or bridge.kind != "bridge":
        yield f"the bridge {name} is missing"
        return
    if e.gateway:
        if e.network.gateway_interface not in links.addresses(host, bridge.index):
            yield f"the bridge {bridge.name} lacks the gateway address {e.network.gateway_interface}"
        if sysctl.read("net.ipv4.ip_forward") != "1":
            yield "IP forwarding is off on the host (net.ipv4.ip_forward=0)"
    veth = links.get_link(host, e.host_veth)
    if veth is None:
        yield f"the host veth {e.host_veth} is missing"
        return
    if not veth.up or veth.master != bridge.index:
        yield f"the host veth {veth.name} is down or not a port of {bridge.name}"
