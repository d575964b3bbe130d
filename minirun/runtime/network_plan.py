"""The network part of a container's or pod's plan: its network's host side and its attachment (veth,
address, route, published ports) on a bridge network, or lo alone for a netns of its own with --network none.

Runtime's options of net/attachment.py in one place, so that `run` and `pod create` attach alike (a pod's
netns is a container's, pinned). The netns is made by the plan's first phase (the namespaces step), so the
attach steps read it from a NetnsHandle when their phase is planned: in a run, after the namespaces step
filled it in; in a dry run, unfilled, with placeholders and no sockets.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from minirun import paths
from minirun.net import attachment, bridge
from minirun.net.network import Network
from minirun.plan import Step


class NetnsHandle:
    """The network namespace of a plan: `label` names it in --explain (nsenter --net=LABEL), `rtnl` is an
    rtnetlink socket inside it and `fd` an open file of it (the veth's peer goes there). Until `fill`: the
    dry-run placeholders."""

    __slots__ = ("label", "rtnl", "fd")

    def __init__(self, placeholder_label: str) -> None:
        self.label = placeholder_label
        self.rtnl: attachment.Rtnl | None = None
        self.fd = -1

    def fill(self, label: str, netlink, open_file: bool) -> None:
        """The namespaces step made the netns: `netlink` is a socket inside it (None: it shares the host's or a
        pod's); `open_file` opens it by `label` for a veth to be moved in (closed by close())."""
        self.label = label
        self.rtnl = attachment.Rtnl(netlink) if netlink is not None else None
        if open_file:
            self.fd = os.open(label, os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def validate_bridge(network: Network) -> attachment.Rtnl:
    """What a bridged attach needs of the host before anything changes: the firewall's tools and a subnet
    no other route claims. Returns the host's rtnetlink socket, for the attach steps."""
    attachment.select_driver().validate()
    host = attachment.open_host()
    bridge.check_subnet_free(host, network)
    return host


def bridge_attachment(network: Network, owner: str, mtu: int | None = None) -> attachment.Attachment:
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
    firewall, side = attachment.select_driver(), bridge.HostSide()
    store = attachment.address_store(paths.ipam_dir(att.network.name), att.network)
    ctx = attachment.AttachContext(host, netns.rtnl, netns.fd, netns.label, store, firewall, side)
    opts = attachment.AttachOptions(ipam_owner=owner, port_owner=owner, mappings=mappings, published=published)
    return [*bridge.network_steps(att.network, host, side, firewall), *attachment.plan_attach(att, ctx, opts)]


def loopback_steps(netns: NetnsHandle) -> list[Step]:
    """--network none: only lo comes up."""
    return attachment.loopback_steps(netns.rtnl, netns.label)
