"""What a container and a pod can be, and how one state may follow another.

A container is `creating` (its record written, its process and network being set up, owned by the
process doing it), then `running` (its PID 1 exec'd), then `exited` (torn down; kept for `ps -a`, `logs`
and `rm` unless --rm). runc's state machine has the same shape (libcontainer/state_linux.go: created ->
running -> stopped); a container that fails while creating goes straight to exited. Teardown is
idempotent, so exited -> exited is allowed. A pod is `creating` until its namespaces are pinned and its
network attached, then `ready`. Removal deletes the record: there is no state for it.

The values are the strings written in the records on disk (StrEnum members are those strings), so records
written before this module existed read the same.

The OCI runtime's states (creating, created, running, stopped):
https://github.com/opencontainers/runtime-spec/blob/main/runtime.md#state
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypedDict

from minirun.errors import Conflict
from minirun.kernel import proc


class ContainerStatus(StrEnum):
    CREATED = "created"  # `minirun create`: on record, never started or not started again yet
    CREATING = "creating"
    RUNNING = "running"
    EXITED = "exited"


class PodStatus(StrEnum):
    CREATING = "creating"
    READY = "ready"


class Owner(TypedDict):
    """A process, as minirun records it: a pid reused by another process has another start time."""

    pid: int
    started: int | None


class NetworkAttachmentRecord(TypedDict, total=False):
    name: str  # the network's
    bridge: str
    address: str  # "10.77.0.2/16"
    gateway: str
    host_veth: str
    mtu: int | None


class ContainerRecord(TypedDict, total=False):
    """A container's record: the JSON written to containers/ID.json, one key per field, read and written
    only by store.py. The keys and their JSON types are what records written by every earlier release
    hold (tests/golden/records), so an upgrade reads them unchanged. A record that cannot be read as one
    is {"id": ID, "corrupt": True} (store.load): its holdings stay reserved."""

    id: str
    name: str
    hostname: str
    command: list[str]
    env: list[str]  # KEY=VALUE
    workdir: str | None
    created: str  # store.now_iso()
    status: ContainerStatus
    owner: Owner  # its launcher, then its supervisor
    network_mode: str  # bridge (any bridged network), pod, none, host
    network: NetworkAttachmentRecord
    pod: str | None
    ports: list[list[Any]]  # PortMapping fields
    auto_remove: bool
    detached: bool
    init: bool
    tty: bool
    read_only: bool
    log: str | None
    log_config: dict[str, str]
    etc_dir: str
    image: dict[str, Any]  # {"id", "name", ...} of the image it runs
    user: list[Any]  # [uid, gid, [groups]]
    user_spec: str | None
    security: dict[str, Any]  # security.SecurityProfile.as_record()
    pid: int
    pid_started: int
    started: str
    finished: str
    exit_code: int
    rebuilt: bool  # rebuilt from the kernel (runtime/rebuild.py), with:
    rebuilt_from: str
    rebuilt_at: str
    unknown: list[str]
    corrupt: bool  # only in what store.load returns, never on disk


class PodRecord(TypedDict, total=False):
    """A pod's record, pods/NAME.json (see ContainerRecord)."""

    id: str
    name: str
    hostname: str
    share: list[str]  # namespaces: net, uts, ipc, pid
    created: str
    status: PodStatus
    owner: Owner  # while creating
    pins: dict[str, str]  # namespace -> its pin path
    ports: list[list[Any]]
    network: NetworkAttachmentRecord
    infra: Owner  # the pod's PID 1 (tini) with --share pid


# `start` (and `restart`) take a created or exited container through creating again, as Docker's do.
CONTAINER_TRANSITIONS: dict[ContainerStatus, frozenset[ContainerStatus]] = {
    ContainerStatus.CREATED: frozenset({ContainerStatus.CREATING}),
    ContainerStatus.CREATING: frozenset({ContainerStatus.RUNNING, ContainerStatus.EXITED}),
    ContainerStatus.RUNNING: frozenset({ContainerStatus.EXITED}),
    ContainerStatus.EXITED: frozenset({ContainerStatus.EXITED, ContainerStatus.CREATING}),
}
POD_TRANSITIONS: dict[PodStatus, frozenset[PodStatus]] = {
    PodStatus.CREATING: frozenset({PodStatus.READY}),
    PodStatus.READY: frozenset(),
}


def container_status(record: Mapping[str, Any]) -> ContainerStatus | None:
    """The record's status; None for a record without a known one (a damaged record)."""
    try:
        return ContainerStatus(record.get("status"))
    except ValueError:
        return None


def is_exited(record: Mapping[str, Any]) -> bool:
    return record.get("status") == ContainerStatus.EXITED


def is_live(record: Mapping[str, Any]) -> bool:
    """Creating, running, or unknown (a damaged record holds what it may own): what may hold a process, an
    address or a veth. Not a created or exited one."""
    return not is_at_rest(record)


def is_at_rest(record: Mapping[str, Any]) -> bool:
    """Created or exited: no process, address or veth; only its record, name, directory and log."""
    return record.get("status") in (ContainerStatus.CREATED, ContainerStatus.EXITED)


def is_ready(pod: Mapping[str, Any]) -> bool:
    return pod.get("status") == PodStatus.READY


def move_container(record: dict[str, Any], to: ContainerStatus, **fields: Any) -> dict[str, Any]:
    """Set the record's status to `to` (and `fields`), if the state machine allows it; else Conflict."""
    current = container_status(record)
    if current is None or to not in CONTAINER_TRANSITIONS[current]:
        raise Conflict(f"container {record.get('id')}: cannot go from {record.get('status')!r} to {to.value!r}")
    record.update(fields, status=to)
    return record


def move_pod(pod: dict[str, Any], to: PodStatus, **fields: Any) -> dict[str, Any]:
    """As move_container, for a pod."""
    try:
        current = PodStatus(pod.get("status"))
    except ValueError:
        current = None
    if current is None or to not in POD_TRANSITIONS[current]:
        raise Conflict(f"pod {pod.get('name')}: cannot go from {pod.get('status')!r} to {to.value!r}")
    pod.update(fields, status=to)
    return pod


def new_container_id() -> str:
    return os.urandom(6).hex()


def owner_identity(pid: int | None = None) -> dict[str, int | None]:
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "started": proc.start_time(pid)}


# Docker's code for "the exit status is unknown": the process ended while nobody was watching it.
EXIT_STATUS_LOST = 255


def container_alive(record: dict[str, Any]) -> bool:
    pid, started = record.get("pid"), record.get("pid_started")
    return isinstance(pid, int) and isinstance(started, int) and proc.is_alive(pid, started)


def is_running(record: dict[str, Any]) -> bool:
    return record.get("status") == ContainerStatus.RUNNING and container_alive(record)
