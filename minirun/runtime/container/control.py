"""The Docker verbs that act on a container: stop, kill, rm, and waiting for a container to have exited."""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import time
from typing import Any

from minirun import filelock, jsonstore, paths
from minirun.errors import MinirunError
from minirun.runtime import model, reconcile, store
from minirun.runtime.container import teardown

DEFAULT_STOP_TIMEOUT = 10.0


EXIT_WAIT_SECONDS = 5.0  # how long to wait for the supervisor to record an exit after the process died


def _wait_gone(record: dict[str, Any], timeout: float) -> bool:
    """True once the container's PID 1 is gone; False if it still runs after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while model.container_alive(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def wait_exited(record: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """Wait until the container's process is gone and its exit is recorded; return the final record."""
    if not _wait_gone(record, timeout):
        return record
    # The supervisor records the exit and tears down; if it is gone, reconcile does it here.
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    while time.monotonic() < deadline:
        current = store.load(record["id"])
        if current is None or model.is_exited(current):
            return current
        if not store.owner_alive(current):
            reconcile.reconcile(full=True)
        time.sleep(0.01)
    return store.load(record["id"])


def wait(record: dict[str, Any]) -> int:
    """`minirun wait` (Docker's): block until the container has exited and its exit is recorded; its exit
    code. The process is watched through a pidfd (pidfd_open(2)): no polling while it runs."""
    while True:
        current = store.load(record["id"])
        if current is None:
            raise MinirunError(
                f"container {record.get('name') or record['id']} was removed when it ended (--rm): its exit code "
                "is gone",
                hint="wait for a container started without --rm, or read the exit code from 'minirun run'",
                code=1,
            )
        if current.get("corrupt"):
            raise MinirunError(f"the record of container {record['id']} is damaged", hint="see 'minirun gc --damaged'")
        if model.is_exited(current):
            return int(current.get("exit_code", model.EXIT_STATUS_LOST))
        if model.container_alive(current):
            _until_gone(current)
            wait_exited(current, timeout=0)  # then the supervisor (or reconcile) records the exit
        else:
            time.sleep(0.02)  # still being created: its PID 1 is not on record yet


def _until_gone(record: dict[str, Any]) -> None:
    try:
        pidfd = os.pidfd_open(record["pid"])
    except ProcessLookupError:
        return
    try:
        if model.container_alive(record):  # the pidfd is the container's PID 1, not a process that reused it
            select.select([pidfd], [], [])  # readable once it has exited
    finally:
        os.close(pidfd)


def parse_signal(text: str) -> signal.Signals:
    name = text.upper()
    try:
        if name.isdigit():
            return signal.Signals(int(name))
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        raise MinirunError(f'invalid signal "{text}"', hint="use a name (TERM, SIGKILL) or a number", code=1) from None


# Signals that end a container for good as far as its restart policy goes (Docker's "fatal" ones: SIGKILL and
# the stop signal); after another one (SIGUSR1, SIGHUP...) the policy still applies.
_FATAL = (signal.SIGKILL, signal.SIGTERM)


def mark_stopped_by_hand(record: dict[str, Any]) -> dict[str, Any]:
    """Its restart policy rests until it is started again (restart_policy.py); the record as it is once no
    start or policy restart of it is under way (they hold the start lock and check the mark under it)."""
    if (record.get("spec") or {}).get("restart", "no") == "no":
        return record
    jsonstore.create_atomic(paths.stopped_by_hand_mark(record["id"]), "")
    with filelock.exclusive(paths.start_lock()):
        return store.load(record["id"]) or record


def kill(record: dict[str, Any], signum: int) -> None:
    if signum in _FATAL:
        record = mark_stopped_by_hand(record)
    if not model.is_running(record):
        raise MinirunError(f"container {record.get('name')} is not running", code=1)
    try:
        os.kill(record["pid"], signum)
    except ProcessLookupError:
        raise MinirunError(f"container {record.get('name')} is not running", code=1) from None


def stop(record: dict[str, Any], timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
    """SIGTERM, the grace period, then SIGKILL (a PID 1 without a TERM handler ends as 137). Idempotent.
    A negative grace period waits for as long as it takes, as Docker's `stop -t -1`. A restart policy rests
    until the container is started again (also when it is waiting to restart now)."""
    record = mark_stopped_by_hand(record)
    if not model.is_running(record):
        return
    if timeout < 0:
        timeout = math.inf
    with contextlib.suppress(ProcessLookupError):
        os.kill(record["pid"], signal.SIGTERM)
    if not _wait_gone(record, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record["pid"], signal.SIGKILL)
    wait_exited(record, timeout=5)


def remove(record: dict[str, Any], force: bool, narrator=None) -> None:
    record = mark_stopped_by_hand(record)  # no policy restart between its end and its removal
    if model.is_running(record):
        if not force:
            raise MinirunError(
                f"cannot remove running container {record.get('name')}",
                hint="stop it first, or use rm -f",
                code=1,
            )
        teardown.kill(record)
        record = wait_exited(record, timeout=5) or record
    current = store.load(record["id"])
    if current is None:
        return
    current["auto_remove"] = True
    teardown.teardown(current, narrator=narrator)
