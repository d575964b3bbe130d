"""The network part of a container's or pod's plan: its network's host side and its attachment (veth,
address, route, published ports) on a bridge network, or lo alone for a netns of its own with --network none.

Runtime's options of net/attachment.py in one place, so that `run` and `pod create` attach alike (a pod's
netns is a container's, pinned). The netns is made by the plan's first phase (the namespaces step), so the
attach steps read it from a NetnsHandle when their phase is planned: in a run, after the namespaces step
filled it in; in a dry run, unfilled, with placeholders and no sockets (runtime/phases.py).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from minirun import paths
from minirun.plan import Step

# net/ is loaded only by a plan that attaches: a pod member or --network none|host does not pay for it.
if TYPE_CHECKING:
    from minirun.net import attachment
    from minirun.net.network import Network


class NetnsHandle:
    """The network namespace of a plan, filled in by the step that makes it and read by the attach phase
    when that is planned: `label` names it in --explain (nsenter --net=LABEL), `rtnl` is an rtnetlink
    socket inside it, `fd` an open file of it (where the veth's peer goes). Unfilled (a dry run): the
    placeholder label, no socket, no file."""

    __slots__ = ("label", "rtnl", "_fd")

    def __init__(self, placeholder_label: str) -> None:
        self.label = placeholder_label
        self.rtnl: attachment.Rtnl | None = None
        self._fd = -1

    def fill(self, label: str, netlink: socket.socket) -> None:
        """The netns exists: `label` is its path, `netlink` a NETLINK_ROUTE socket inside it (its owner
        closes it)."""
        from minirun.net.attachment import Rtnl

        self.label, self.rtnl = label, Rtnl(netlink)

    @property
    def fd(self) -> int:
        """Opened on first use, so only by a plan that moves a veth in (a pod's net pin is made after the
        socket arrives); -1 until filled. close() closes it."""
        if self._fd < 0 and self.rtnl is not None:
            self._fd = os.open(self.label, os.O_RDONLY | os.O_CLOEXEC)
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def validate_bridge(network: Network) -> attachment.Rtnl:
    """What a bridged attach needs of the host before anything changes: the firewall's tools and a subnet
    no other route claims. Returns the host's rtnetlink socket, for the attach steps."""
    from minirun.net import attachment, bridge

    attachment.select_driver().validate()
    host = attachment.open_host()
    bridge.check_subnet_free(host, network)
    return host


def bridge_attachment(network: Network, owner: str, mtu: int | None = None) -> attachment.Attachment:
    from minirun.net import attachment

    return attachment.Attachment(network, attachment.host_veth_name(owner), mtu or network.mtu or 1500)


def bridge_steps(
    att: attachment.Attachment,
    host: attachment.Rtnl | None,
    netns: NetnsHandle,
    owner: str,
    mappings: tuple = (),
    published: Callable[[], dict] = dict,
) -> list[Step]:
    """The network's steps (bridge, ip-forward, nat), then the ones that put eth0 of the netns on its bridge
    (ipam, veth, veth-up, eth0, default-route[, ports]): the step names users see as `step k/N`."""
    from minirun.net import attachment, bridge

    firewall, side = attachment.select_driver(), bridge.HostSide()
    store = attachment.address_store(paths.ipam_dir(att.network.name), att.network)
    ctx = attachment.AttachContext(host, netns.rtnl, netns.fd, netns.label, store, firewall, side)
    opts = attachment.AttachOptions(ipam_owner=owner, port_owner=owner, mappings=mappings, published=published)
    return [*bridge.network_steps(att.network, host, side, firewall), *attachment.plan_attach(att, ctx, opts)]


def loopback_steps(netns: NetnsHandle) -> list[Step]:
    """--network none: only lo comes up."""
    from minirun.net import attachment

    return attachment.loopback_steps(netns.rtnl, netns.label)
