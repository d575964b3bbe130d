"""A netlink socket inside another network namespace, without moving the caller (H4 in STYLE.md).

A forked child joins the namespace, opens the socket and hands it back over SCM_RIGHTS; the socket stays
bound to that namespace (minirun.kernel.nsfork.netlink_in).
"""

from __future__ import annotations

from minirun.errors import MinirunError
from minirun.kernel import nsfork
from minirun.net.rtnl import Rtnl


def rtnl_in(netns_path: str) -> Rtnl:
    """An Rtnl for the namespace at `netns_path` (/proc/PID/ns/net or a pin such as /run/netns/NAME)."""
    netlink = nsfork.netlink_in(netns_path)
    if netlink is None:
        raise MinirunError(f"cannot enter the network namespace {netns_path}")
    return Rtnl(netlink)


# NETNSA_NSID when the namespace has no id in the asking one (the kernel's NETNSA_NSID_NOT_ASSIGNED, -1).
_NSID_NOT_ASSIGNED = 0xFFFFFFFF


def namespace_id(ipr: Rtnl, netns_fd: int) -> int | None:
    """The id the namespace of `ipr` gives the network namespace `netns_fd` (an nsfs descriptor), the id a
    veth names its peer's namespace by (IFLA_LINK_NETNSID); None when it has none. RTM_GETNSID with
    NETNSA_FD: rtnetlink(7), ip-netns(8) `ip netns identify`/`list-id`."""
    from minirun.net import rtnl

    msg = rtnl.codecs().nsidmsg()
    msg["attrs"] = [["NETNSA_FD", netns_fd]]
    try:
        replies = ipr.request(msg, rtnl.RTM_GETNSID)
    except OSError:
        return None
    nsid = replies[0].get_attr("NETNSA_NSID") if replies else None
    return None if nsid is None or nsid == _NSID_NOT_ASSIGNED else nsid
