"""Attach a container's or pod's network namespace to a bridge network, as runtime/ calls it today.

A thin layer over net/bridge.py (the network's host side) and net/attachment.py (one attachment), with the
nft firewall driver: runtime is ported onto those two modules later in issue 14, then this module goes.
"""

from __future__ import annotations

from collections.abc import Callable

from minirun.net import bridge
from minirun.net.attachment import (
    CONTAINER_IFNAME,
    LOOPBACK_INDEX,
    AttachContext,
    Attachment,
    AttachOptions,
    loopback_steps,
    plan_attach,
)
from minirun.net.bridge import HostSide, check_subnet_free
from minirun.net.firewall import select_driver
from minirun.net.ipam import AddressStore
from minirun.net.network import Network
from minirun.net.rtnl import Rtnl
from minirun.plan import Step

__all__ = [
    "CONTAINER_IFNAME",
    "LOOPBACK_INDEX",
    "Attachment",
    "bridge_steps",
    "check_subnet_free",
    "loopback_steps",
    "network_steps",
]


def network_steps(net: Network, host: Rtnl, state: dict, done: dict, *, gateway: bool = True) -> list[Step]:
    """bridge.network_steps with the nft driver (`state` and `done` are no longer filled in)."""
    return bridge.network_steps(net, host, HostSide(), select_driver("nft"), gateway=gateway)


def bridge_steps(
    att: Attachment,
    host: Rtnl | None,
    container: Rtnl | None,
    netns_fd: int,
    ns_label: str,
    store: AddressStore,
    owner: str,
    mappings: tuple = (),
    published: Callable[[], dict] = dict,
) -> list[Step]:
    """The network's steps, then the ones that put eth0 of the netns on `att.network`'s bridge."""
    firewall, side = select_driver("nft"), HostSide()
    ctx = AttachContext(host, container, netns_fd, ns_label, store, firewall, side)
    opts = AttachOptions(ipam_owner=owner, port_owner=owner, mappings=mappings, published=published)
    return [*bridge.network_steps(att.network, host, side, firewall), *plan_attach(att, ctx, opts)]
