"""IPAM the way CNI's host-local does it: one O_EXCL file per address under a flock, round-robin.

Records live under the state root on tmpfs (/run), so they vanish at reboot together with the links they
describe (host-local keeps them on disk and leaks them across reboots: containernetworking/plugins#252).

The layout, read and written only here (tests/unit/test_ipam_format.py pins it; running containers keep
their addresses across an upgrade only while it stays readable):
    <root>/<network>/<IPv4 address>   "OWNER\\nIFNAME", created O_EXCL: one reservation
    <root>/<network>/lock             the flock held for every read-decide-write
    <root>/<network>/last_reserved    the last address handed out (round-robin starts after it)
Any other file there (a dotfile, a temp file) is not a reservation.

CNI's host-local: https://www.cni.dev/plugins/current/ipam/host-local/
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator
from typing import NamedTuple

from minirun import filelock
from minirun.errors import MinirunError


class SubnetExhausted(MinirunError):
    pass


class AddressTaken(MinirunError):
    """A requested address (CNI's IP=, a static IP) is held by someone else."""


class Allocator(NamedTuple):
    """Pure policy: which address comes next. Never the network, gateway or broadcast address."""

    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address

    def candidates(self, last: ipaddress.IPv4Address | None) -> Iterator[ipaddress.IPv4Address]:
        """Every usable host address once, starting after `last` and wrapping around."""
        first = int(self.subnet.network_address) + 1
        end = int(self.subnet.broadcast_address)  # exclusive: the broadcast address is never handed out
        if self.subnet.prefixlen >= 31:
            first, end = int(self.subnet.network_address), int(self.subnet.broadcast_address) + 1
        count = end - first
        if count <= 0:
            return
        start = first
        if last is not None and first <= int(last) < end:
            start = int(last) + 1
        for i in range(count):
            addr = ipaddress.IPv4Address(first + (start - first + i) % count)
            if addr != self.gateway:
                yield addr

    def next_free(self, last: ipaddress.IPv4Address | None, taken: set[str]) -> ipaddress.IPv4Address:
        for addr in self.candidates(last):
            if str(addr) not in taken:
                return addr
        raise SubnetExhausted(
            f"no free address left in {self.subnet} ({len(taken)} in use)",
            hint="remove stopped containers (minirun gc) or use a larger subnet",
        )


class Reservation(NamedTuple):
    """Who holds an address: a container or pod id (CNI: the container id), and its interface there."""

    owner: str
    ifname: str  # "" when the record names none


def _format_reservation(owner: str, ifname: str) -> str:
    return f"{owner}\n{ifname}"


def _parse_reservation(text: str) -> Reservation:
    owner, _, ifname = text.partition("\n")
    return Reservation(owner, ifname)


def _is_address(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


class RangeAllocator(NamedTuple):
    """An Allocator limited to start-end (CNI's rangeStart/rangeEnd), same order and exclusions."""

    base: Allocator
    start: ipaddress.IPv4Address | None
    end: ipaddress.IPv4Address | None

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.base.subnet

    def next_free(self, last: ipaddress.IPv4Address | None, taken: set[str]) -> ipaddress.IPv4Address:
        for addr in self.base.candidates(last):
            if (self.start and addr < self.start) or (self.end and addr > self.end):
                continue
            if str(addr) not in taken:
                return addr
        raise SubnetExhausted(f"no free address left in {self.base.subnet} ({len(taken)} in use)")


class AddressStore:
    """The on-disk reservations of one network: <dir>/<ip> holds "owner\\nifname"."""

    LOCK = "lock"
    LAST = "last_reserved"

    def __init__(self, directory: str, allocator: Allocator | RangeAllocator | None = None) -> None:
        self.directory = directory
        self.allocator = allocator

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Held for every read-decide-write of the reservations."""
        return filelock.exclusive(os.path.join(self.directory, self.LOCK))

    def _reserved_names(self) -> set[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return set()
        return {n for n in names if _is_address(n)}

    def reserve(self, owner: str, ifname: str = "eth0") -> ipaddress.IPv4Address:
        """Reserve the next free address for `owner`."""
        if self.allocator is None:
            raise ValueError("reserve() needs an allocator")
        with self.locked():
            last = self._read_last()
            taken = self._reserved_names()
            while True:
                addr = self.allocator.next_free(last, taken)
                try:
                    fd = os.open(
                        os.path.join(self.directory, str(addr)),
                        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                        0o600,
                    )
                except FileExistsError:  # written without the lock by someone: skip it
                    taken.add(str(addr))
                    continue
                with os.fdopen(fd, "w") as f:
                    f.write(_format_reservation(owner, ifname))
                self._write_last(addr)
                return addr

    def claim(self, addr: ipaddress.IPv4Address, owner: str, ifname: str = "eth0") -> bool:
        """Reserve exactly `addr` for `owner` (a requested address: CNI's IP=); False if someone holds it."""
        with self.locked():
            try:
                fd = os.open(
                    os.path.join(self.directory, str(addr)), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
                )
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(_format_reservation(owner, ifname))
            return True

    def release(self, addr: ipaddress.IPv4Address | str, owner: str | None = None) -> bool:
        """Release `addr` (only if held by `owner`, when given). Already free is success."""
        path = os.path.join(self.directory, str(addr))
        with self.locked():
            if owner is not None and self.owner_of(addr) not in (owner, None):
                return False
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            return True

    def reservation(self, addr: ipaddress.IPv4Address | str) -> Reservation | None:
        try:
            with open(os.path.join(self.directory, str(addr))) as f:
                return _parse_reservation(f.read())
        except FileNotFoundError:
            return None

    def owner_of(self, addr: ipaddress.IPv4Address | str) -> str | None:
        held = self.reservation(addr)
        return None if held is None else held.owner

    def reservations(self) -> dict[str, Reservation]:
        """{address: its reservation} for every record (read without the lock: a snapshot)."""
        found = {}
        for name in self._reserved_names():
            held = self.reservation(name)
            if held is not None:
                found[name] = held
        return found

    def _read_last(self) -> ipaddress.IPv4Address | None:
        try:
            with open(os.path.join(self.directory, self.LAST)) as f:
                return ipaddress.IPv4Address(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _write_last(self, addr: ipaddress.IPv4Address) -> None:
        tmp = os.path.join(self.directory, f".{self.LAST}.tmp")
        with open(tmp, "w") as f:
            f.write(str(addr))
        os.replace(tmp, os.path.join(self.directory, self.LAST))


def all_reservations(root: str) -> dict[str, dict[str, Reservation]]:
    """{network: {address: reservation}} under `root` (paths.ipam_root(), one directory per network); a
    network with none is left out."""
    try:
        networks = sorted(os.listdir(root))
    except FileNotFoundError:
        return {}
    found = {}
    for network in networks:
        held = AddressStore(os.path.join(root, network)).reservations()
        if held:
            found[network] = held
    return found
