"""Damaged container records (issue 13): a record that cannot be read is set aside by reconcile, and its
container id keeps holding what the container may own, since nothing proves it free: its address, name
claim, host veth, published ports and directory. `minirun gc --damaged` shows those; with -f it releases
them, on the operator's word (the container's process, if it still runs, loses its network)."""

from __future__ import annotations

import os
from typing import NamedTuple

from minirun import paths
from minirun.runtime import gc, sandbox, state


class Holding(NamedTuple):
    container_id: str
    records: list[str]  # the damaged files, as set aside
    addresses: list[tuple[str, str]]  # (network, address)
    names: list[str]
    veth: str | None  # on the host, when it is there
    directory: str | None

    def describe(self) -> list[str]:
        items = [f"address {address} on network {network}" for network, address in self.addresses]
        items += [f"name {name}" for name in self.names]
        items += [f"link {self.veth}"] if self.veth else []
        items += [f"directory {self.directory}"] if self.directory else []
        items += [f"damaged record {path}" for path in self.records]
        return items


def holdings() -> list[Holding]:
    damaged = state.damaged_records()
    if not damaged:
        return []
    from minirun.net import links, rtnl

    reservations = gc.ipam_reservations()
    claims = gc.name_claims()
    with rtnl.Rtnl() as ipr:
        present = {link.name for link in links.list_links(ipr)}
    found = []
    for container_id, records in sorted(damaged.items()):
        veth = links.host_veth_name(container_id)
        directory = sandbox.container_dir(container_id)
        found.append(
            Holding(
                container_id,
                records,
                [
                    (net, address)
                    for net, owned in reservations.items()
                    for address, owner in owned.items()
                    if owner == container_id
                ],
                sorted(name for name, owner in claims.items() if owner == container_id),
                veth if veth in present else None,
                directory if os.path.lexists(directory) else None,
            )
        )
    return found


def release(holding: Holding) -> list[str]:
    """Free everything `holding` lists; every step runs (missing is success), failures are collected."""
    from minirun.net import firewall, ipam, links, rtnl

    released = []
    for network, address in holding.addresses:
        if ipam.AddressStore(paths.ipam_dir(network)).release(address, holding.container_id):
            released.append(f"address {address} on network {network}")
    for name in holding.names:
        state.release_name(name, holding.container_id)
        released.append(f"name {name}")
    if firewall.remove_ports(holding.container_id):
        released.append("published ports")
    if holding.veth:
        with rtnl.Rtnl() as ipr:
            if links.delete_link(ipr, holding.veth):
                released.append(f"link {holding.veth}")
    if holding.directory and gc.remove_container_dir(holding.container_id):
        released.append(f"directory {holding.directory}")
    for path in holding.records:
        state.remove_file(path)
        released.append(f"damaged record {path}")
    return released
