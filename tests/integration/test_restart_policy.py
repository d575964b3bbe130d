"""Issue 15: `--restart` carried out by the supervisor (runtime/supervisor/restarts.py), with Docker's
back-off, and resting once a container is stopped by hand. The rules alone: tests/unit/test_restart_policy.py."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.integration.conftest import ipam_reservations, minirun, records, wait_for
from tests.reliability.test_owner_registry import alive

# Each run prints when it started (seconds since the epoch), then ends with the given code.
RUN_THEN_EXIT = "date +%s.%N; exit {code}"


def the_record(state_dir: Path, name: str) -> dict:
    return next(r for r in records(state_dir) if r["name"] == name)


def starts(name: str) -> list[float]:
    """The start times its runs printed; a line still being written (no newline yet) is not one."""
    output = minirun("logs", name).stdout
    return [float(line) for line in output[: output.rfind("\n") + 1].split()]


def supervisor_gone(state_dir: Path) -> bool:
    """The supervisor exits once nothing is left to do: no container runs and no restart is due."""
    return not (state_dir / "supervisor.sock").exists()


def test_on_failure_restarts_up_to_its_count_then_rests(state_dir: Path):
    script = RUN_THEN_EXIT.format(code=3)
    assert minirun("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "sh", "-c", script).returncode == 0
    wait_for(lambda: supervisor_gone(state_dir), timeout=20, what="the supervisor idle: no restart left")
    record = the_record(state_dir, "flaky")
    assert record["status"] == "exited" and record["exit_code"] == 3 and record["restart_count"] == 2
    assert len(starts("flaky")) == 3  # the first run and two restarts
    inspected = json.loads(minirun("inspect", "flaky").stdout)[0]
    assert inspected["RestartCount"] == 2
    assert inspected["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert ipam_reservations(state_dir) == []
    assert minirun("rm", "flaky").returncode == 0


def test_on_failure_leaves_a_clean_exit_alone(state_dir: Path):
    script = RUN_THEN_EXIT.format(code=0)
    assert minirun("run", "-d", "--name", "fine", "--restart", "on-failure", "sh", "-c", script).returncode == 0
    wait_for(lambda: supervisor_gone(state_dir), timeout=20, what="the supervisor idle")
    record = the_record(state_dir, "fine")
    assert record["exit_code"] == 0 and record.get("restart_count", 0) == 0
    assert len(starts("fine")) == 1
    assert minirun("rm", "fine").returncode == 0


def test_always_backs_off_and_stop_ends_it(state_dir: Path):
    script = RUN_THEN_EXIT.format(code=0)
    assert minirun("run", "-d", "--name", "loop", "--restart", "always", "sh", "-c", script).returncode == 0
    wait_for(lambda: len(starts("loop")) >= 5, timeout=20, what="four restarts")
    times = starts("loop")
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    # Docker's back-off: at least 100 ms, then 200, 400, 800 between the starts (the run itself adds to it).
    assert all(gap >= 0.09 * 2**i for i, gap in enumerate(gaps[:4])), gaps
    assert minirun("stop", "-t", "1", "loop").returncode == 0
    wait_for(lambda: supervisor_gone(state_dir), timeout=20, what="the supervisor idle: the policy rests")
    stopped_at = len(starts("loop"))
    assert the_record(state_dir, "loop")["status"] == "exited"
    # Started by hand, the policy applies again.
    assert minirun("start", "loop").returncode == 0
    wait_for(lambda: len(starts("loop")) >= stopped_at + 2, timeout=20, what="restarts after a start by hand")
    assert minirun("rm", "-f", "loop").returncode == 0
    wait_for(lambda: supervisor_gone(state_dir), timeout=20, what="no restart of a removed container")
    assert records(state_dir) == []


def test_kill_rests_the_policy_a_crash_does_not(state_dir: Path):
    assert minirun("run", "-d", "--name", "svc", "--restart", "always", "sleep", "300").returncode == 0
    first = the_record(state_dir, "svc")
    os.kill(first["pid"], signal.SIGKILL)  # a crash, as far as minirun knows: restarted
    wait_for(
        lambda: (lambda r: r.get("restart_count") == 1 and r["status"] == "running")(the_record(state_dir, "svc")),
        what="restarted after the crash",
    )
    second = the_record(state_dir, "svc")
    assert second["pid"] != first["pid"] and alive(second["pid"], second["pid_started"])
    assert minirun("kill", "svc").returncode == 0  # SIGKILL through minirun: stopped by hand
    wait_for(lambda: supervisor_gone(state_dir), timeout=20, what="the supervisor idle: not restarted")
    after = the_record(state_dir, "svc")
    assert after["status"] == "exited" and after["exit_code"] == 137 and after["restart_count"] == 1
    assert minirun("rm", "svc").returncode == 0


def test_restart_is_refused_where_docker_refuses_it():
    foreground = minirun("run", "--restart", "always", "true")
    assert foreground.returncode == 125 and "--restart needs -d" in foreground.stderr
    with_rm = minirun("run", "-d", "--rm", "--restart", "always", "true")
    assert with_rm.returncode == 125 and "--restart and --rm conflict" in with_rm.stderr
    bad = minirun("run", "-d", "--restart", "sometimes", "true")
    assert bad.returncode == 125 and 'invalid restart policy "sometimes"' in bad.stderr
