"""Taking over the containers of a supervisor that was killed.

A detached container's PID 1 is the supervisor's child. Killed (kill -9, the OOM killer), the supervisor
leaves its containers running, re-parented to init: nobody is told when they end. The next supervisor
adopts them: it watches each through a pidfd (pidfd_open(2): readable once the process has exited, and
immune to PID reuse once open) and, when one ends, tears it down as it would its own child's.

What adoption cannot give back: the exit code. Only the parent learns it from wait(2), and the parent is
init now, so an adopted container ends with Docker's "unknown" status 255 (`model.EXIT_STATUS_LOST`); its
output has no reader since the old supervisor died (a write fails with EPIPE). Keeping both would take a
monitor per container holding the pipe and the wait status (Podman's conmon, containerd's shim), which
this design trades for one shared supervisor (see daemon.py).

pidfd_open(2): https://man7.org/linux/man-pages/man2/pidfd_open.2.html
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from minirun.runtime import model, store
from minirun.runtime.model import ContainerStatus


def _orphaned(record: dict[str, Any]) -> bool:
    """A detached container that runs on with its owner dead (its supervisor was killed)."""
    return (
        not record.get("corrupt")
        and bool(record.get("detached"))
        and record.get("status") == ContainerStatus.RUNNING
        and not store.owner_alive(record)
    )


def adopt_orphans(me: dict[str, int | None]) -> dict[int, str]:
    """Take over every orphaned container: {pidfd: container id}. The record names `me` as its owner from
    now on, so reconcile (which leaves a container with a live owner to it) stops looking at it."""
    adopted: dict[int, str] = {}
    for record in store.all_records():
        if not _orphaned(record) or not model.container_alive(record):
            continue  # one that ended already is reconcile's: it records the exit and tears it down
        try:
            pidfd = os.pidfd_open(record["pid"])
        except OSError:
            continue  # gone since: reconcile's, as above
        # Read again now that the pidfd pins the process: it is still the container's PID 1 (start time),
        # and nobody took the record over or tore it down in between.
        fresh = store.load(record["id"])
        if fresh is None or not _orphaned(fresh) or not model.container_alive(fresh):
            os.close(pidfd)
            continue
        fresh["owner"] = me
        store.save(fresh)
        adopted[pidfd] = record["id"]
    return adopted


def ended(container_id: str, me: dict[str, int | None]) -> dict[str, Any] | None:
    """The record of an adopted container whose process just ended, its exit recorded as unknown; None when
    it is not ours to tear down any more (removed, or already marked exited by `stop`/`rm`)."""
    record = store.load(container_id)
    if record is None or record.get("corrupt") or record.get("owner") != me or model.is_exited(record):
        return None
    record.update(exit_code=model.EXIT_STATUS_LOST, finished=store.now_iso())
    return record


def close_all(adopted: dict[int, str]) -> None:
    for pidfd in adopted:
        with contextlib.suppress(OSError):
            os.close(pidfd)
    adopted.clear()
