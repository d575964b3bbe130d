"""Links, addresses and routes: the seed's `ip link` / `ip addr` / `ip route` steps over rtnetlink.

Every function takes the `Rtnl` of the namespace it acts in; none of them moves the caller between
namespaces. `ensure_*` converge (create, tolerate EEXIST, re-read and verify); `delete_*` treat "already
gone" as success.

veth(4): https://man7.org/linux/man-pages/man4/veth.4.html; rtnetlink(7):
https://man7.org/linux/man-pages/man7/rtnetlink.7.html
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import zlib
from typing import NamedTuple

from minirun.errors import Conflict, KernelError
from minirun.net import rtnl
from minirun.net.rtnl import NetlinkError, Rtnl

IFNAMSIZ = 16  # including the trailing NUL: names are at most 15 characters
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RTPROT_BOOT = 3
RTN_UNICAST = 1


class Link(NamedTuple):
    index: int
    name: str
    kind: str | None
    up: bool
    mtu: int
    master: int | None
    address: str | None


def host_veth_name(owner_id: str, ifname: str = "eth0") -> str:
    """`veth` + 8 hex of a hash (CRC-32) of (owner, ifname): recomputable without state, <= 15 characters.

    The `veth` prefix matters: NetworkManager leaves links named veth* alone.
    """
    return f"veth{zlib.crc32(f'{owner_id}/{ifname}'.encode()):08x}"


def valid_ifname(name: str) -> bool:
    return (
        0 < len(name) < IFNAMSIZ
        and "/" not in name
        and not any(c.isspace() for c in name)
        and name
        not in (
            ".",
            "..",
        )
    )


def _link_from_msg(msg) -> Link:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo is not None else None
    return Link(
        index=msg["index"],
        name=msg.get_attr("IFLA_IFNAME"),
        kind=kind,
        up=bool(msg["flags"] & rtnl.IFF_UP),
        mtu=msg.get_attr("IFLA_MTU"),
        master=msg.get_attr("IFLA_MASTER"),
        address=msg.get_attr("IFLA_ADDRESS"),
    )


def _link_message(ipr: Rtnl, name: str):
    """RTM_GETLINK's answer for the link called `name`, or None when there is none."""
    msg = rtnl.codecs().ifinfmsg()
    msg["attrs"] = [["IFLA_IFNAME", name]]
    try:
        (reply,) = ipr.request(msg, rtnl.RTM_GETLINK)
    except NetlinkError as exc:
        if exc.errno == errno.ENODEV:
            return None
        raise KernelError(f"look up link {name}", exc.errno) from exc
    return reply


def get_link(ipr: Rtnl, name: str) -> Link | None:
    """The link called `name`, or None when there is none."""
    reply = _link_message(ipr, name)
    return None if reply is None else _link_from_msg(reply)


def peer_namespace_id(ipr: Rtnl, name: str) -> int | None:
    """The id (in the namespace of `ipr`) of the network namespace that holds the peer of veth `name`
    (IFLA_LINK_NETNSID); None when there is no such link, or its peer is in the same namespace."""
    reply = _link_message(ipr, name)
    return None if reply is None else reply.get_attr("IFLA_LINK_NETNSID")


def list_links(ipr: Rtnl) -> list[Link]:
    return [_link_from_msg(m) for m in ipr.dump(rtnl.codecs().ifinfmsg(), rtnl.RTM_GETLINK)]


def _newlink(
    ipr: Rtnl, what: str, attrs: list, *, flags: int = 0, index: int = 0, up: bool | None = None, create: bool = False
) -> None:
    msg = rtnl.codecs().ifinfmsg()
    msg["index"] = index
    if up is not None:
        msg["change"] = rtnl.IFF_UP
        msg["flags"] = rtnl.IFF_UP if up else 0
    msg["attrs"] = attrs
    nl_flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL if create else 0
    try:
        ipr.request(msg, rtnl.RTM_NEWLINK, nl_flags | flags)
    except NetlinkError as exc:
        raise KernelError(what, exc.errno) from exc


def ensure_bridge(ipr: Rtnl, name: str, mtu: int | None = None) -> tuple[Link, bool]:
    """Create bridge `name` if missing; return (link, created). A non-bridge `name` is a Conflict."""
    created = True
    # A bridge without an explicit MAC takes the lowest MAC of its ports, so it changes whenever a
    # container with a lower veth MAC joins; every container's ARP entry for the gateway then points at
    # a MAC nobody answers to until it expires (seconds of lost DNS, NAT, published ports). A fixed,
    # locally administered MAC keeps the gateway where it is (CNI's bridge and libnetwork do the same).
    mac = ":".join(f"{b:02x}" for b in bytes([0x02, *os.urandom(5)]))
    attrs = [
        ["IFLA_IFNAME", name],
        ["IFLA_ADDRESS", mac],
        ["IFLA_LINKINFO", {"attrs": [["IFLA_INFO_KIND", "bridge"]]}],
    ]
    if mtu:
        attrs.append(["IFLA_MTU", mtu])
    try:
        _newlink(ipr, f"ip link add {name} type bridge", attrs, create=True)
    except KernelError as exc:
        if exc.errno != errno.EEXIST:
            raise
        created = False
    link = get_link(ipr, name)
    if link is None:  # deleted between our add and our read: a concurrent `minirun` teardown or a user
        raise Conflict(f"bridge {name} vanished while being set up", hint="run the command again")
    if link.kind != "bridge":
        raise Conflict(
            f"{name} exists but is a {link.kind or 'plain'} link, not a bridge",
            hint=f"delete it (ip link delete {name}) or choose another network",
        )
    return link, created


def set_up(ipr: Rtnl, index: int, what: str) -> None:
    _newlink(ipr, f"ip link set {what} up", [], index=index, up=True)


def set_hairpin(ipr: Rtnl, index: int, name: str) -> None:
    """`bridge link set dev NAME hairpin on`: the bridge may send a frame back out of the port it came in by.

    A container that connects to its own published port via the host's address needs it: with bridge
    netfilter the DNATed packet is bridged straight back to the port it arrived on (Docker, netavark and
    CNI's hairpinMode do the same).
    """
    # The bridge_slave form (`ip link set NAME type bridge_slave hairpin on`): pyroute2 encodes it nested.
    port_mode = {"attrs": [["IFLA_BRPORT_MODE", 1]]}
    slave = {"attrs": [["IFLA_INFO_SLAVE_KIND", "bridge"], ["IFLA_INFO_SLAVE_DATA", port_mode]]}
    _newlink(ipr, f"bridge link set dev {name} hairpin on", [["IFLA_LINKINFO", slave]], index=index)


def add_veth_pair(
    ipr: Rtnl, host_name: str, peer_name: str, peer_netns_fd: int, *, mtu: int, master: int | None
) -> None:
    """Create host_name <-> peer_name with the peer created directly inside the netns `peer_netns_fd`.

    Creating the peer in place costs ~0.6 ms; creating it on the host and moving it costs ~27 ms.
    The host end is left down so IPv6 can be switched off on it before it comes up.
    """
    peer = {"attrs": [["IFLA_IFNAME", peer_name], ["IFLA_NET_NS_FD", peer_netns_fd], ["IFLA_MTU", mtu]]}
    attrs = [
        ["IFLA_IFNAME", host_name],
        ["IFLA_MTU", mtu],
        [
            "IFLA_LINKINFO",
            {"attrs": [["IFLA_INFO_KIND", "veth"], ["IFLA_INFO_DATA", {"attrs": [["VETH_INFO_PEER", peer]]}]]},
        ],
    ]
    if master is not None:
        attrs.append(["IFLA_MASTER", master])
    _newlink(ipr, f"ip link add {host_name} type veth peer name {peer_name} netns <container>", attrs, create=True)


def delete_link(ipr: Rtnl, name: str) -> bool:
    """Delete link `name`; True if it existed. "Already gone" is success."""
    msg = rtnl.codecs().ifinfmsg()
    msg["attrs"] = [["IFLA_IFNAME", name]]
    try:
        ipr.request(msg, rtnl.RTM_DELLINK)
    except NetlinkError as exc:
        if exc.errno == errno.ENODEV:
            return False
        raise KernelError(f"ip link delete {name}", exc.errno) from exc
    return True


def ensure_address(ipr: Rtnl, index: int, iface: ipaddress.IPv4Interface, ifname: str) -> None:
    """Add `iface` (address/prefix) to link `index`; an identical address already there is fine."""
    msg = rtnl.codecs().ifaddrmsg()
    msg["family"] = socket.AF_INET
    msg["prefixlen"] = iface.network.prefixlen
    msg["index"] = index
    address = str(iface.ip)
    msg["attrs"] = [
        ["IFA_LOCAL", address],
        ["IFA_ADDRESS", address],
        ["IFA_BROADCAST", str(iface.network.broadcast_address)],
    ]
    try:
        ipr.request(msg, rtnl.RTM_NEWADDR, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL)
    except NetlinkError as exc:
        if exc.errno == errno.EEXIST and iface in addresses(ipr, index):
            return
        raise KernelError(f"ip addr add {iface} dev {ifname}", exc.errno) from exc


def addresses(ipr: Rtnl, index: int | None = None) -> list[ipaddress.IPv4Interface]:
    """IPv4 addresses (of link `index`, or all)."""
    msg = rtnl.codecs().ifaddrmsg()
    msg["family"] = socket.AF_INET
    found = []
    for reply in ipr.dump(msg, rtnl.RTM_GETADDR):
        if index is None or reply["index"] == index:
            found.append(ipaddress.IPv4Interface(f"{reply.get_attr('IFA_LOCAL')}/{reply['prefixlen']}"))
    return found


DEFAULT_ROUTE = ipaddress.IPv4Network("0.0.0.0/0")


def _route_msg(dst: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address, oif: int):
    msg = rtnl.codecs().rtmsg()
    msg["family"] = socket.AF_INET
    msg["table"] = RT_TABLE_MAIN
    msg["proto"] = RTPROT_BOOT
    msg["scope"] = RT_SCOPE_UNIVERSE
    msg["type"] = RTN_UNICAST
    msg["dst_len"] = dst.prefixlen
    attrs = [["RTA_GATEWAY", str(gateway)], ["RTA_OIF", oif]]
    if dst.prefixlen:
        attrs.insert(0, ["RTA_DST", str(dst.network_address)])
    msg["attrs"] = attrs
    return msg


def add_default_route(ipr: Rtnl, gateway: ipaddress.IPv4Address, oif: int, ifname: str) -> None:
    """`ip route add default via GW dev IFNAME`; one already there is an error (a fresh netns has none)."""
    try:
        ipr.request(_route_msg(DEFAULT_ROUTE, gateway, oif), rtnl.RTM_NEWROUTE, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL)
    except NetlinkError as exc:
        raise KernelError(f"ip route add default via {gateway} dev {ifname}", exc.errno) from exc


def add_route(ipr: Rtnl, dst: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address, oif: int, ifname: str) -> None:
    """`ip route add DST via GW dev IFNAME`; the same route already there is fine."""
    try:
        ipr.request(_route_msg(dst, gateway, oif), rtnl.RTM_NEWROUTE, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL)
    except NetlinkError as exc:
        if exc.errno != errno.EEXIST:
            raise KernelError(f"ip route add {dst} via {gateway} dev {ifname}", exc.errno) from exc


def set_mac(ipr: Rtnl, index: int, mac: str, ifname: str) -> None:
    """`ip link set IFNAME address MAC`."""
    msg = rtnl.codecs().ifinfmsg()
    msg["index"] = index
    msg["attrs"] = [["IFLA_ADDRESS", mac]]
    try:
        ipr.request(msg, rtnl.RTM_NEWLINK)
    except NetlinkError as exc:
        raise KernelError(f"ip link set {ifname} address {mac}", exc.errno) from exc


class Route(NamedTuple):
    dst: ipaddress.IPv4Network
    oif: int | None
    gateway: str | None
    table: int


def routes(ipr: Rtnl) -> list[Route]:
    """IPv4 routes of the main and local-less tables (everything except table local)."""
    msg = rtnl.codecs().rtmsg()
    msg["family"] = socket.AF_INET
    found = []
    for reply in ipr.dump(msg, rtnl.RTM_GETROUTE):
        table = reply.get_attr("RTA_TABLE") or reply["table"]
        if table == 255:  # the local table: host's own addresses, not destinations
            continue
        dst = reply.get_attr("RTA_DST") or "0.0.0.0"
        found.append(
            Route(
                dst=ipaddress.IPv4Network(f"{dst}/{reply['dst_len']}"),
                oif=reply.get_attr("RTA_OIF"),
                gateway=reply.get_attr("RTA_GATEWAY"),
                table=table,
            )
        )
    return found
