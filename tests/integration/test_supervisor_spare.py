"""Issue 15: the supervisor keeps a spare worker, forked ahead of time with the run path imported; a `run -d`
is served by it while the next spare is forked (runtime/supervisor/spare.py). What the kernel shows: the
supervisor's children, before and after a request."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.integration.conftest import minirun, records, wait_for
from tests.integration.test_storage import open_files
from tests.reliability.test_owner_registry import alive


def children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except FileNotFoundError:
        return set()


def spares(supervisor: int, state_dir: Path) -> set[int]:
    """The supervisor's children that are no container's PID 1 (with no request in flight: the spare)."""
    return children(supervisor) - {r["pid"] for r in records(state_dir)}


def start(state_dir: Path, name: str) -> dict:
    assert minirun("run", "-d", "--name", name, "sleep", "300").returncode == 0
    return next(r for r in records(state_dir) if r["name"] == name)


def test_a_run_request_is_served_by_the_spare_forked_before_it(state_dir: Path):
    first = start(state_dir, "first")
    supervisor = first["owner"]["pid"]
    wait_for(lambda: len(spares(supervisor, state_dir)) == 1, what="one spare worker waiting")
    (before,) = spares(supervisor, state_dir)
    with open(f"/proc/{before}/cmdline", "rb") as f:
        assert b"minirun.cli.supervise" in f.read(), "the spare is a fork of the supervisor"
    # The lock is the supervisor's alone: a spare outliving a killed supervisor must not hold up the next one.
    lock = str(state_dir / "supervisor.lock")
    assert lock in open_files(supervisor) and lock not in open_files(before)
    second = start(state_dir, "second")
    assert second["owner"]["pid"] == supervisor
    # The spare that waited served the request and exited; a new one waits for the next.
    wait_for(lambda: not os.path.exists(f"/proc/{before}"), what="the spare gone after serving")
    wait_for(lambda: len(spares(supervisor, state_dir)) == 1, what="the next spare forked")
    assert spares(supervisor, state_dir) != {before}
    assert all(alive(r["pid"], r["pid_started"]) for r in records(state_dir))
    assert minirun("rm", "-f", "first", "second").returncode == 0


def test_the_teardown_of_an_ended_container_is_served_by_the_spare(state_dir: Path):
    """The spare has the teardown path imported too: a container's end is handled by it, not by a child that
    imports everything first."""
    record = start(state_dir, "short")
    supervisor = record["owner"]["pid"]
    wait_for(lambda: len(spares(supervisor, state_dir)) == 1, what="one spare worker waiting")
    (before,) = spares(supervisor, state_dir)
    os.kill(record["pid"], signal.SIGKILL)
    wait_for(lambda: records(state_dir)[0]["status"] == "exited", what="its exit recorded and torn down")
    assert records(state_dir)[0]["exit_code"] == 137
    wait_for(lambda: not os.path.exists(f"/proc/{before}"), what="the spare gone after the teardown")
    wait_for(lambda: len(spares(supervisor, state_dir)) == 1, what="the next spare forked")
    assert minirun("rm", "short").returncode == 0


def test_the_spare_ends_with_its_supervisor(state_dir: Path):
    """Killed (kill -9) or idle, the supervisor leaves no spare behind: the spare reads end-of-file."""
    record = start(state_dir, "held")
    supervisor = record["owner"]["pid"]
    wait_for(lambda: len(spares(supervisor, state_dir)) == 1, what="one spare worker waiting")
    (spare,) = spares(supervisor, state_dir)
    spare_started = _start_time(spare)
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not alive(spare, spare_started), what="the spare gone with its killed supervisor")
    # The next command starts a supervisor that adopts the container; once it is removed, that supervisor
    # idles out, and its own spare ends with it.
    assert minirun("rm", "-f", "held").returncode == 0
    wait_for(lambda: records(state_dir) == [], what="the container removed")
    wait_for(lambda: not _supervisors(state_dir), timeout=15, what="the supervisor idled out, its spare with it")


def _start_time(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except FileNotFoundError:
        return -1


def _supervisors(state_dir: Path) -> list[int]:
    """Every live process running the supervisor's module for this test's state root (spares included)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        ours = f"MINIRUN_STATE_DIR={state_dir}".encode() in environ
        if b"minirun.cli.supervise" in cmdline and ours and alive(int(entry), _start_time(int(entry))):
            found.append(int(entry))
    return found
