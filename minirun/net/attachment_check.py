"""Is an attachment still what was made? inspect() reads what the kernel, IPAM and the firewall show of it
(AttachmentState: doctor shows each fact); problems() / verify() list every difference from Expected,
first problem first (CNI CHECK reports the first).
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

    @classmethod
    def of_runtime(cls, record: dict, network: Network, owner: str, netns: str, mappings: tuple = ()) -> Expected:
        """From the "network" part of a container's or pod's record (Attachment.as_record): eth0 with a
        default route via the gateway, on a gateway bridge, masqueraded unless the network is internal."""
        address = ipaddress.IPv4Interface(record["address"])
        gateway = record.get("gateway", str(network.gateway))
        ports = PortRules(owner, owner, str(address.ip), mappings) if mappings else None
        return cls(
            network,
            "eth0",
            netns,
            address,
            record.get("host_veth", ""),
            owner,
            routes=(("0.0.0.0/0", gateway),),
            masquerade=not network.internal,
            ports=ports,
            bridge=record.get("bridge"),
        )


class AttachmentState(NamedTuple):
    """What the kernel, IPAM and the firewall show of one attachment right now: doctor shows each fact (and
    repairs with the links in it), CNI CHECK reports the first that differs from Expected (problems())."""

    lo: links.Link | None  # the netns's loopback
    iface: links.Link | None
    addresses: tuple[ipaddress.IPv4Interface, ...]  # of iface
    missing_routes: tuple[tuple[str, str], ...]  # Expected.routes not on iface
    ipam_owner: str | None  # who IPAM says holds the address
    bridge: links.Link | None  # None: missing, or a link that is not a bridge
    bridge_addresses: tuple[ipaddress.IPv4Interface, ...]
    ip_forward: str | None  # net.ipv4.ip_forward
    veth: links.Link | None  # the host end
    rule_problems: tuple[str, ...]  # FirewallDriver.problems: masquerade, port rules, the 127/8 guard

    @property
    def veth_on_bridge(self) -> bool:
        return self.veth is not None and self.bridge is not None and self.veth.master == self.bridge.index


def inspect(
    expected: Expected, host: Rtnl, container: Rtnl, store: AddressStore, firewall: FirewallDriver
) -> AttachmentState:
    e = expected
    iface = links.get_link(container, e.ifname)
    addresses = tuple(links.addresses(container, iface.index)) if iface is not None else ()
    present = {(str(r.dst), r.gateway, r.oif) for r in links.routes(container)} if iface is not None else set()
    missing = tuple((dst, gw) for dst, gw in e.routes if iface is None or (dst, gw, iface.index) not in present)
    bridge = links.get_link(host, e.bridge or e.network.bridge)
    bridge = bridge if bridge is not None and bridge.kind == "bridge" else None
    return AttachmentState(
        lo=links.get_link(container, "lo"),
        iface=iface,
        addresses=addresses,
        missing_routes=missing,
        ipam_owner=store.owner_of(e.address.ip),
        bridge=bridge,
        bridge_addresses=tuple(links.addresses(host, bridge.index)) if bridge is not None else (),
        ip_forward=sysctl.read("net.ipv4.ip_forward"),
        veth=links.get_link(host, e.host_veth),
        rule_problems=tuple(firewall.problems(e.network, e.masquerade, e.ports)),
    )


def problems(e: Expected, s: AttachmentState) -> Iterator[str]:
    """Every way `s` differs from `e`, first problem first (CNI CHECK reports the first)."""
    if s.iface is None:
        yield f"{e.ifname} is missing in {e.netns}"
        return
    if not s.iface.up:
        yield f"{e.ifname} is down in {e.netns}"
    if e.mac and s.iface.address != e.mac:
        yield f"{e.ifname} has MAC {s.iface.address}, not {e.mac}"
    if e.address not in s.addresses:
        yield f"{e.ifname} in {e.netns} lacks its address {e.address}"
    for dst, gw in s.missing_routes:
        yield f"the route {dst} via {gw} dev {e.ifname} is missing in {e.netns}"
    if s.ipam_owner != e.ipam_owner:
        yield f"the IPAM record of {e.address.ip} is missing or held by someone else"
    yield from _host_side_problems(e, s)
    yield from s.rule_problems


def _host_side_problems(e: Expected, s: AttachmentState) -> Iterator[str]:
    bridge = s.bridge
    if bridge is None:
        yield f"the bridge {e.bridge or e.network.bridge} is missing"
        return
    if e.gateway:
        if e.network.gateway_interface not in s.bridge_addresses:
            yield f"the bridge {bridge.name} lacks the gateway address {e.network.gateway_interface}"
        if s.ip_forward != "1":
            yield "IP forwarding is off on the host (net.ipv4.ip_forward=0)"
    if s.veth is None:
        yield f"the host veth {e.host_veth} is missing"
        return
    if not s.veth.up or not s.veth_on_bridge:
        yield f"the host veth {s.veth.name} is down or not a port of {bridge.name}"


def verify(
    expected: Expected, host: Rtnl, container: Rtnl, store: AddressStore, firewall: FirewallDriver
) -> Iterator[str]:
    """Every way the attachment differs from what was made, first problem first."""
    return problems(expected, inspect(expected, host, container, store, firewall))
