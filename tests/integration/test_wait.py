"""`minirun wait` (Docker's `docker wait`, issue 15): block until containers exit, print their exit codes."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.conftest import minirun, spawn, wait_for


@pytest.fixture(autouse=True)
def _clean_up(clean_slate):
    yield


def detach(*args: str) -> None:
    result = minirun("run", "-d", *args)
    assert result.returncode == 0, result.stderr


def test_wait_blocks_until_the_container_exits_and_prints_its_code():
    detach("--name", "gated", "sh", "-c", "while [ ! -e /run/go ]; do sleep 0.02; done; exit 3")
    waiting = spawn("wait", "gated")
    wait_for(lambda: blocked_on_a_pidfd(waiting), what="wait blocked on the container's pidfd")
    assert waiting.poll() is None
    assert minirun("exec", "gated", "touch", "/run/go").returncode == 0
    out, err = waiting.communicate(timeout=10)
    assert (waiting.returncode, out, err) == (0, "3\n", "")


def test_wait_prints_each_code_in_order_and_fails_for_an_unknown_one():
    detach("--name", "seven", "sh", "-c", "exit 7")
    detach("--name", "sleeper", "sleep", "60")
    wait_for(lambda: "Exited (7)" in minirun("ps", "-a").stdout, what="seven exited")
    waiting = spawn("wait", "seven", "nosuch", "sleeper")
    assert minirun("stop", "-t", "0", "sleeper").returncode == 0
    out, err = waiting.communicate(timeout=15)
    assert waiting.returncode == 1
    assert out == "7\n137\n"  # seven at once (already exited), then sleeper when stop killed it
    assert err.count("\n") == 1 and "no such container: nosuch" in err


def test_wait_sleeps_on_a_pidfd_while_the_container_runs():
    """No polling loop: the waiting process holds a pidfd of the container's PID 1 and sleeps in select(2)
    on it (the kernel's wait channel says so; a loop of sleeps would show a nanosleep)."""
    detach("--name", "long", "sleep", "60")
    waiting = spawn("wait", "long")
    wait_for(lambda: blocked_on_a_pidfd(waiting), what="wait blocked on the container's pidfd")
    assert minirun("kill", "long").returncode == 0
    out, _ = waiting.communicate(timeout=10)
    assert out == "137\n"


def blocked_on_a_pidfd(process: subprocess.Popen) -> bool:
    """The process holds a pidfd and sleeps in select/poll (wchan names the kernel function it sleeps in)."""
    try:
        fds = [os.readlink(f"/proc/{process.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{process.pid}/fd")]
        with open(f"/proc/{process.pid}/wchan") as f:
            wchan = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # select(2) sleeps in poll_schedule_timeout (do_select on older kernels); a sleep loop in *nanosleep
    return "anon_inode:[pidfd]" in fds and ("poll" in wchan or "select" in wchan)


def test_wait_with_no_container_is_a_usage_error():
    assert minirun("wait").returncode == 2
