"""Container records: one atomically written JSON file per container, plus an O_EXCL claim per name.

A record names its owner (the launcher's pid and start time). A record whose owner is gone belongs to a
launcher that was killed: `gc.reconcile()` finds them (through `owner_alive()`) so their address, links and
files can be released.
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Any

from minirun import jsonstore, paths
from minirun.errors import Conflict
from minirun.jsonstore import create_atomic, read_json, remove_file, write_atomic
from minirun.kernel import proc


def now_iso() -> str:
    """UTC with microseconds and a Z, as Docker's inspect shows times."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def claim_name(name: str, container_id: str) -> None:
    """Reserve `name` for `container_id`; a name in use is a Conflict (the claim is an O_EXCL file)."""
    if not create_atomic(paths.name_claim(name), container_id):
        holder = read_name(name)
        raise Conflict(
            f'the container name "{name}" is already in use by container {holder or "?"}',
            hint="choose another --name, or remove that container",
        )


def read_name(name: str) -> str | None:
    try:
        with open(paths.name_claim(name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def name_claims() -> dict[str, str]:
    """Every name claim: name -> the container id it names."""
    try:
        names = os.listdir(paths.names_dir())
    except FileNotFoundError:
        return {}
    return {name: owner for name in names if not name.startswith(".") and (owner := read_name(name))}


def release_name(name: str, container_id: str) -> None:
    if read_name(name) == container_id:
        remove_file(paths.name_claim(name))


def save(record: dict[str, Any]) -> None:
    write_atomic(paths.container_record(record["id"]), record)


def load(container_id: str) -> dict[str, Any] | None:
    """The container's record; {"id": ID, "corrupt": True} for one that cannot be read as a record."""
    try:
        record = read_json(paths.container_record(container_id))
    except (ValueError, UnicodeDecodeError, OSError):
        return {"id": container_id, "corrupt": True}
    if record is not None and (not isinstance(record, dict) or record.get("id") != container_id):
        return {"id": container_id, "corrupt": True}
    return record


# A damaged record is moved aside as ID.json.damaged-TIMESTAMP: out of every listing of records, but its id
# still holds what the container may own (see gc.reconcile) until `minirun gc --damaged -f`.
DAMAGED_MARK = ".json.damaged-"


def set_aside(container_id: str) -> str | None:
    """Move a damaged record aside; returns its new path (None when it is gone already)."""
    return set_aside_file(paths.container_record(container_id))


def set_aside_file(path: str) -> str | None:
    """Move the damaged record at `path` (NAME.json) aside as NAME.json.damaged-TIMESTAMP."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = f"{path[: -len('.json')]}{DAMAGED_MARK}{stamp}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return None
    return aside


def damaged_records() -> dict[str, list[str]]:
    """Container id -> the damaged records set aside for it."""
    try:
        names = os.listdir(paths.containers_dir())
    except FileNotFoundError:
        return {}
    found: dict[str, list[str]] = {}
    for name in sorted(names):
        if DAMAGED_MARK in name and not name.startswith("."):
            found.setdefault(name.split(DAMAGED_MARK, 1)[0], []).append(os.path.join(paths.containers_dir(), name))
    return found


def all_records() -> list[dict[str, Any]]:
    return [r for r in map(load, jsonstore.record_names(paths.containers_dir())) if r is not None]


def owner_alive(record: dict[str, Any]) -> bool:
    owner = record.get("owner") or {}
    pid, started = owner.get("pid"), owner.get("started")
    return isinstance(pid, int) and isinstance(started, int) and proc.is_alive(pid, started)


def remove(record: dict[str, Any]) -> None:
    if record.get("name"):
        release_name(record["name"], record["id"])
    remove_file(paths.container_record(record["id"]))


# Test-only: seconds to wait between reading state and acting on it, where a concurrent command may change
# it meanwhile (the reconcile race of issue 13); unset in normal use.
PAUSE_ENV = "MINIRUN_TEST_RECONCILE_PAUSE"


def test_pause() -> None:
    pause = os.environ.get(PAUSE_ENV)
    if pause:
        time.sleep(float(pause))
