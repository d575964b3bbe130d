"""Container records: one atomically written JSON file per container, plus an O_EXCL claim per name.

A record names its owner (the launcher's pid and start time). A record whose owner is gone belongs to a
launcher that was killed: `stale_records()` finds them so their address, links and files can be released.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from minirun import paths
from minirun.errors import Conflict
from minirun.kernel import proc


def write_atomic(path: str, data: dict[str, Any]) -> None:
    """Readers never see half a record: write a temp file in the same directory, fsync, rename."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def claim_name(name: str, container_id: str) -> None:
    """Reserve `name` for `container_id`; a name in use is a Conflict (the claim is an O_EXCL file)."""
    os.makedirs(paths.names_dir(), mode=0o700, exist_ok=True)
    try:
        fd = os.open(paths.name_claim(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        holder = read_name(name)
        raise Conflict(
            f'the container name "{name}" is already in use by container {holder or "?"}',
            hint="choose another --name, or remove that container",
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(container_id)


def read_name(name: str) -> str | None:
    try:
        with open(paths.name_claim(name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def release_name(name: str, container_id: str) -> None:
    if read_name(name) == container_id:
        remove_file(paths.name_claim(name))


def save(record: dict[str, Any]) -> None:
    write_atomic(paths.container_record(record["id"]), record)


def load(container_id: str) -> dict[str, Any] | None:
    try:
        with open(paths.container_record(container_id)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        return {"id": container_id, "corrupt": True}


def all_records() -> list[dict[str, Any]]:
    try:
        names = os.listdir(paths.containers_dir())
    except FileNotFoundError:
        return []
    records = []
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            record = load(name[: -len(".json")])
            if record is not None:
                records.append(record)
    return records


def owner_alive(record: dict[str, Any]) -> bool:
    owner = record.get("owner") or {}
    pid, started = owner.get("pid"), owner.get("started")
    return isinstance(pid, int) and isinstance(started, int) and proc.is_alive(pid, started)


def stale_records() -> list[dict[str, Any]]:
    return [r for r in all_records() if not owner_alive(r)]


def remove(record: dict[str, Any]) -> None:
    if record.get("name"):
        release_name(record["name"], record["id"])
    remove_file(paths.container_record(record["id"]))
