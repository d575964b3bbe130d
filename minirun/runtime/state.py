"""Container records: one atomically written JSON file per container, plus an O_EXCL claim per name.

A record names its owner (the launcher's pid and start time). A record whose owner is gone belongs to a
launcher that was killed: `gc.reconcile()` finds them (through `owner_alive()`) so their address, links and
files can be released.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import time
from typing import Any

from minirun import paths
from minirun.errors import Conflict
from minirun.kernel import proc


def _temp_path(path: str) -> str:
    # The writer's pid is in the name so `sweep_temp_files` can tell an abandoned one from one in use.
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")


def _write_temp(path: str, text: str) -> str:
    """A temp file beside `path` holding `text`; on any failure (a full or read-only disk) none is left, and
    the OSError names the path (errors.host_error turns it into one line for the operator)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        remove_file(tmp)
        raise OSError(exc.errno, exc.strerror, path) from None
    return tmp


def now_iso() -> str:
    """UTC with microseconds and a Z, as Docker's inspect shows times."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def write_atomic(path: str, data: dict[str, Any]) -> None:
    """Readers never see half a record: write a temp file in the same directory, fsync, rename."""
    tmp = _write_temp(path, json.dumps(data, indent=1, sort_keys=True))
    try:
        os.replace(tmp, path)
    except OSError:
        remove_file(tmp)
        raise


def create_atomic(path: str, text: str) -> bool:
    """Create `path` holding `text` unless it exists; never visible half-written (link(2) is atomic)."""
    tmp = _write_temp(path, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def sweep_temp_files(directory: str) -> list[str]:
    """Remove temp files whose writer died before renaming or linking them."""
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            pid = name.rsplit(".", 2)[-2]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                remove_file(os.path.join(directory, name))
                removed.append(name)
    return removed


def remove_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


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


def read_json(path: str) -> dict[str, Any] | None:
    """A record, or None when it does not exist. Raises ValueError for one that is not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


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
