"""IPAM the way CNI's host-local does it: one O_EXCL file per address under a flock, round-robin.

Records live under the state root on tmpfs (/run), so they vanish at reboot together with the links they
describe (host-local keeps them on disk and leaks them across reboots: containernetworking/plugins#252).
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


class AddressStore:
    """The on-disk reservations of one network: <dir>/<ip> holds "owner\\nifname"."""

    LOCK = "lock"
    LAST = "last_reserved"

    def __init__(self, directory: str, allocator: Allocator | None = None) -> None:
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
        return {n for n in names if n not in (self.LOCK, self.LAST) and not n.startswith(".")}

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
                    f.write(f"{owner}\n{ifname}")
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
                f.write(f"{owner}\n{ifname}")
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

    def owner_of(self, addr: ipaddress.IPv4Address | str) -> str | None:
        try:
            with open(os.path.join(self.directory, str(addr))) as f:
                return f.read().split("\n", 1)[0]
        except FileNotFoundError:
            return None

    def reservations(self) -> dict[str, str]:
        """{address: owner} for every record."""
        found = {}
        for name in self._reserved_names():
            owner = self.owner_of(name)
            if owner is not None:
                found[name] = owner
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
