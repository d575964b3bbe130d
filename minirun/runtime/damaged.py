"""Damaged container records (issue 13): a record that cannot be read is set aside by reconcile, and its
container id keeps holding what the container may own, since nothing proves it free: its address, name
claim, host veth, published ports and directory. `minirun gc --damaged` shows those; with -f it releases
them, on the operator's word (the container's process, if it still runs, loses its network).

A container whose record was rebuilt (runtime.rebuild) holds its resources through that record again:
its damaged files are all that `gc --damaged -f` removes then."""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple

from minirun import jsonstore, paths
from minirun.runtime import store
from minirun.runtime.container import config, teardown


class Holding(NamedTuple):
    container_id: str
    records: list[str]  # the damaged files, as set aside
    addresses: list[tuple[str, str]]  # (network, address)
    names: list[str]
    veth: str | None  # on the host, when it is there
    directory: str | None
    rebuilt: bool = False  # it has a record again: only the damaged files are its holding's

    def describe(self) -> list[str]:
        if self.rebuilt:
            return [f"damaged record {path} (the container has a rebuilt record)" for path in self.records]
        items = [f"address {address} on network {network}" for network, address in self.addresses]
        items += [f"name {name}" for name in self.names]
        items += [f"link {self.veth}"] if self.veth else []
        items += [f"directory {self.directory}"] if self.directory else []
        items += [f"damaged record {path}" for path in self.records]
        return items


def holdings() -> list[Holding]:
    damaged = store.damaged_records()
    if not damaged:
        return []
    from minirun.net import attachment

    reservations = attachment.all_reservations(paths.ipam_root())
    claims = store.name_claims()
    with attachment.open_host() as ipr:
        present = {link.name for link in attachment.list_links(ipr)}
    found = []
    for container_id, records in sorted(damaged.items()):
        if _has_record(container_id):
            found.append(Holding(container_id, records, [], [], None, None, rebuilt=True))
            continue
        veth = attachment.host_veth_name(container_id)
        directory = config.container_dir(container_id)
        found.append(
            Holding(
                container_id,
                records,
                [
                    (net, address)
                    for net, owned in reservations.items()
                    for address, held in owned.items()
                    if held.owner == container_id
                ],
                sorted(name for name, owner in claims.items() if owner == container_id),
                veth if veth in present else None,
                directory if os.path.lexists(directory) else None,
            )
        )
    return found


def _has_record(container_id: str) -> bool:
    record = store.load(container_id)
    return record is not None and not record.get("corrupt")


def release(holding: Holding) -> list[str]:
    """Free everything `holding` lists; every step runs (missing is success), failures are collected.

    Under the lock a rebuild holds: if the container got a record meanwhile, only the damaged files go."""
    from minirun import filelock

    with filelock.exclusive(paths.damaged_lock()):
        if not holding.rebuilt and _has_record(holding.container_id):
            holding = holding._replace(addresses=[], names=[], veth=None, directory=None, rebuilt=True)
        return _release(holding)


def _release(holding: Holding) -> list[str]:
    from minirun.net import attachment

    released: list[str] = []
    owner = holding.container_id
    for network, address in holding.addresses:  # named with their network: a damaged id may hold several
        if attachment.AddressStore(paths.ipam_dir(network)).release(address, owner):
            released.append(f"address {address} on network {network}")
    for name in holding.names:
        store.release_name(name, owner)
        released.append(f"name {name}")
    # Its ports (on whatever network: the record that knew is damaged) and its veth, deleted now: no netns
    # of a container with a record will take it along.
    detach = attachment.Detach(None, owner, port_owner=None if holding.rebuilt else owner, host_veth=holding.veth)
    no_addresses = attachment.AddressStore(paths.ipam_root())  # unused: the addresses went above
    with contextlib.ExitStack() as sockets:
        host = lambda: sockets.enter_context(attachment.open_host())  # noqa: E731
        for step in attachment.plan_detach(detach, no_addresses, attachment.select_driver(), host, released).values():
            step.apply()
    if holding.directory and teardown.remove_container_dir(holding.container_id):
        released.append(f"directory {holding.directory}")
    for path in holding.records:
        jsonstore.remove_file(path)
        released.append(f"damaged record {path}")
    return released
