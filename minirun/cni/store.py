"""What the plugin keeps per network under the data dir, so that DEL, CHECK and GC work without prevResult:

<dataDir>/<network>/lock                       flock held for each whole ADD/DEL/CHECK/GC
<dataDir>/<network>/ipam/<ip>                  minirun's AddressStore (host-local's layout: "owner\\nifname")
<dataDir>/<network>/attachments/<id>@<if>.json one record per attachment: address, host veth, ports, ...
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from enum import StrEnum

from minirun import jsonstore


class AttachmentStatus(StrEnum):
    """An attachment record is written as `creating` before anything is made (so DEL and GC find what a
    killed ADD made) and becomes `ready` when the ADD finished; DEL removes it. The values are on disk."""

    CREATING = "creating"
    READY = "ready"


def port_owner(container_id: str, ifname: str) -> str:
    """The tag of one attachment's DNAT rules (`minirun port owner=cni:ID:IFNAME`), < nft's 128-byte comment."""
    owner = f"cni:{container_id}:{ifname}"
    if len(owner) > 100:
        import zlib

        owner = f"cni:{container_id[:80]}~{zlib.crc32(container_id.encode()):08x}:{ifname}"
    return owner


class LockTimeout(Exception):
    pass


class Store:
    def __init__(self, data_dir: str, network: str) -> None:
        self.root = os.path.join(data_dir, network)
        self.ipam_dir = os.path.join(self.root, "ipam")
        self.records_dir = os.path.join(self.root, "attachments")

    @contextlib.contextmanager
    def locked(self, timeout: float) -> Iterator[None]:
        """The network's lock, or LockTimeout after `timeout` seconds (the caller answers "try again")."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + timeout
            delay = 0.002
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    if time.monotonic() >= deadline:
                        raise LockTimeout(os.path.join(self.root, "lock")) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
            yield
        finally:
            os.close(fd)

    def path(self, container_id: str, ifname: str) -> str:
        return os.path.join(self.records_dir, f"{container_id}@{ifname}.json")

    def load(self, container_id: str, ifname: str) -> dict | None:
        try:
            with open(self.path(container_id, ifname)) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return None

    def save(self, record: dict) -> None:
        # Not fsync'ed: the runtime retries a CNI ADD that did not finish, and an ADD pays no fsync.
        jsonstore.write_text_atomic(
            self.path(record["containerID"], record["ifname"]), json.dumps(record), durable=False
        )

    def remove(self, container_id: str, ifname: str) -> bool:
        try:
            os.unlink(self.path(container_id, ifname))
        except FileNotFoundError:
            return False
        return True

    def records(self) -> list[dict]:
        found = []
        for name in jsonstore.record_names(self.records_dir):
            try:
                record = jsonstore.read_json(os.path.join(self.records_dir, f"{name}.json"))
            except ValueError:
                continue
            if record is not None:
                found.append(record)
        return found
