"""minirun's records, read and written in one place: containers (one atomically written JSON file each,
plus an O_EXCL claim per name), pods, what is listed beside them (container and pod directories, records set
aside as damaged), and questions asked of all of them (published ports, pod members).

A record names its owner (the launcher's pid and start time). A record whose owner is gone belongs to a
launcher that was killed: reconcile.py finds them (through `owner_alive()`) so their address, links and
files can be released. A record that cannot be read is set aside, never taken as evidence that what it
held is free.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import time
from typing import Any

from minirun import jsonstore, paths
from minirun.errors import Conflict, MinirunError, NotFound
from minirun.jsonstore import create_atomic, read_json, remove_file, write_atomic
from minirun.kernel import proc
from minirun.runtime import model
from minirun.runtime.model import ContainerRecord, PodRecord


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


def save(record: ContainerRecord) -> None:
    write_atomic(paths.container_record(record["id"]), record)


def create(record: ContainerRecord) -> bool:
    """Write the record only if the container has none yet (a rebuilt one); False when one appeared."""
    return create_atomic(paths.container_record(record["id"]), json.dumps(record, indent=1, sort_keys=True))


def has_record(container_id: str) -> bool:
    """Whether a record file is there, readable or not."""
    return os.path.lexists(paths.container_record(container_id))


def remove_record(container_id: str) -> None:
    """The record alone (a run rolling back before its name was claimed); `remove` also releases the name."""
    remove_file(paths.container_record(container_id))


def pod_exists(name: str) -> bool:
    return os.path.exists(paths.pod_record(name))


def holder_ids(live_records: list[ContainerRecord] | None = None, pods: set[str] | None = None) -> set[str]:
    """Every id that may hold an address, a veth or port rules: live containers (`live_records`, else all on
    record now), pods (`pods`, else those on record now) and damaged container records, which are never
    evidence that what they may hold is free."""
    records = all_records() if live_records is None else live_records
    return (
        {r["id"] for r in records if model.is_live(r)} | (pod_ids() if pods is None else pods) | set(damaged_records())
    )


def load(container_id: str) -> ContainerRecord | None:
    """The container's record; {"id": ID, "corrupt": True} for one that cannot be read as a record."""
    try:
        record = read_json(paths.container_record(container_id))
    except (ValueError, UnicodeDecodeError, OSError):
        return {"id": container_id, "corrupt": True}
    if record is not None and (not isinstance(record, dict) or record.get("id") != container_id):
        return {"id": container_id, "corrupt": True}
    return record


# A damaged record is moved aside as ID.json.damaged-TIMESTAMP: out of every listing of records, but its id
# still holds what the container may own (see reconcile.py) until `minirun gc --damaged -f`.
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


def all_records() -> list[ContainerRecord]:
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


class DamagedPod(MinirunError):
    """A pod record that cannot be read: the pod's pins, address and veth may still be in use."""


def load_pod(name: str) -> PodRecord | None:
    """The pod's record, None when there is none; DamagedPod when it cannot be read as one."""
    try:
        pod = jsonstore.read_json(paths.pod_record(name))
    except (ValueError, UnicodeDecodeError, OSError):
        pod = {}
    if pod is not None and (not isinstance(pod, dict) or pod.get("name") != name or "id" not in pod):
        raise DamagedPod(
            f"the record of pod {name} is damaged",
            hint="see what it may hold with 'minirun gc --damaged', release it with 'minirun gc --damaged -f'",
        )
    return pod


def save_pod(pod: PodRecord) -> None:
    write_atomic(paths.pod_record(pod["name"]), pod)


def remove_pod(name: str) -> None:
    remove_file(paths.pod_record(name))


def all_pods() -> list[PodRecord]:
    """Every pod with a readable record (reconcile sets damaged ones aside)."""
    pods = []
    for name in jsonstore.record_names(paths.pods_dir()):
        with contextlib.suppress(DamagedPod):
            pod = load_pod(name)
            if pod is not None:
                pods.append(pod)
    return pods


def damaged_pod_names() -> list[str]:
    try:
        names = os.listdir(paths.pods_dir())
    except FileNotFoundError:
        return []
    return sorted({n.split(DAMAGED_MARK, 1)[0] for n in names if DAMAGED_MARK in n})


def find_pod(name: str) -> PodRecord:
    pod = load_pod(name)
    if pod is None or not model.is_ready(pod):
        raise _pod_not_found(name)
    return pod


def _pod_not_found(name: str) -> NotFound:
    if name in damaged_pod_names():
        return NotFound(
            f"no such pod: {name} (its record is damaged)",
            hint="see what it holds with 'minirun gc --damaged', release it with 'minirun gc --damaged -f'",
        )
    return NotFound(f"no such pod: {name}", hint="see 'minirun pod ls'")


def pod_members(pod_name: str) -> list[ContainerRecord]:
    return [r for r in all_records() if r.get("pod") == pod_name]


def published_ports(exclude: str | None = None) -> dict[str, tuple]:
    """{"container NAME" | "pod NAME": its port mappings} for every live container and pod that publishes."""
    from minirun.net.ports import PortMapping

    owners = [(f"container {r.get('name')}", r) for r in all_records() if model.is_live(r)]
    owners += [(f"pod {p['name']}", p) for p in all_pods()]
    return {
        label: tuple(PortMapping(*m) for m in owner["ports"])
        for label, owner in owners
        if owner.get("ports") and owner["id"] != exclude
    }


def container_dirs() -> set[str]:
    """Container ids with a directory, on the data root or (from before it moved there) the state root.
    A run writes its record before making its directory, so one listed here without a record is an orphan."""
    return _subdirs(os.path.join(paths.writable_root(), "containers")) | _subdirs(paths.containers_dir())


def pod_data_dirs() -> set[str]:
    """Names of pods with a directory on the data root (their /etc files, written after the pod's record)."""
    return _subdirs(os.path.join(paths.writable_root(), "pods"))


def _subdirs(directory: str) -> set[str]:
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return set()
    with entries:
        return {e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)}


def pod_ids() -> set[str]:
    """Ids of the pods on record (a pod's address and veth belong to the pod, not to a container)."""
    ids = set()
    for name in jsonstore.record_names(paths.pods_dir()):
        path = paths.pod_record(name)
        try:
            with open(path) as f:
                ids.add(json.load(f)["id"])
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError):
            # Never evidence that the pod's pins, address and veth are free: set aside, held (see reconcile).
            aside = set_aside_file(path)
            if aside:
                print(
                    f"minirun: warning: the record of pod {name} is damaged; moved to {aside}, "
                    "and what the pod may hold stays reserved; see 'minirun gc --damaged'",
                    file=sys.stderr,
                )
    return ids


def damaged_pods_exist() -> bool:
    """A damaged pod record hides which address and veth are its own: while one exists, no address and no
    veth is released as an orphan (`gc --damaged -f` ends that)."""
    try:
        return any(DAMAGED_MARK in name for name in os.listdir(paths.pods_dir()))
    except FileNotFoundError:
        return False
