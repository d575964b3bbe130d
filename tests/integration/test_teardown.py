"""Nothing outlives its container: rollback at every step, teardown after kill -9, gc."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from tests.integration.conftest import (
    host_links,
    ipam_reservations,
    minirun,
    records,
    spawn,
    wait_for,
    wait_running,
)

BRIDGE_STEPS = ["bridge", "ip-forward", "nat", "ipam", "veth", "veth-up", "eth0", "default-route"]


@pytest.mark.parametrize("step", BRIDGE_STEPS)
def test_failure_after_each_step_rolls_back_everything(step, state_dir):
    result = minirun("run", "--name", "doomed", "true", env={"MINIRUN_TEST_FAIL_AFTER_STEP": step})
    assert result.returncode == 125
    index = BRIDGE_STEPS.index(step) + 1
    assert result.stderr.startswith(f"minirun: error: step {index}/{len(BRIDGE_STEPS)} ({step}) failed")
    assert "rolled back" in result.stderr
    assert "Traceback" not in result.stderr
    # the leak_check fixture asserts no veth, address, record or name remains; the name is reusable:
    assert minirun("run", "--name", "doomed", "true").returncode == 0


def test_failure_in_loopback_step_rolls_back(state_dir):
    result = minirun("run", "--network", "none", "true", env={"MINIRUN_TEST_FAIL_AFTER_STEP": "loopback"})
    assert result.returncode == 125 and "step 1/1 (loopback) failed" in result.stderr


def test_kill_9_of_the_launcher_is_reclaimed_by_the_next_command(state_dir):
    proc = spawn("run", "--name", "victim", "sleep", "60")
    (record,) = wait_running(state_dir)
    veth = record["network"]["host_veth"]
    assert veth in host_links() and ipam_reservations(state_dir)
    proc.kill()  # SIGKILL: no teardown runs
    proc.wait()
    # The container dies with its launcher (parent-death signal), and its netns with it.
    wait_for(lambda: not os.path.exists(f"/proc/{record['pid']}"), what="container gone")
    assert records(state_dir) and ipam_reservations(state_dir)  # left behind, until minirun runs again
    gc = minirun("gc")
    assert gc.returncode == 0, gc.stderr
    assert f"address {record['network']['address'].split('/')[0]}" in gc.stdout
    assert f"record {record['id']}" in gc.stdout
    assert records(state_dir) == [] and ipam_reservations(state_dir) == []
    assert minirun("gc").stdout == ""  # idempotent


def test_any_command_reclaims(state_dir):
    proc = spawn("run", "--name", "victim2", "sleep", "60")
    wait_running(state_dir)
    proc.kill()
    proc.wait()
    result = minirun("run", "--name", "victim2", "true")  # the dead run's name must be free again
    assert result.returncode == 0, result.stderr
    assert records(state_dir) == []


def test_kill_9_at_random_moments_leaves_nothing(state_dir):
    """Kill the launcher at spread-out moments of its setup; the next gc always leaves a clean host."""
    for delay in (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08):
        marker = f"{60 + random.random():.6f}"  # a sleep no other process on the machine runs
        proc = spawn("run", "sleep", marker)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        wait_for(
            lambda m=marker: subprocess.run(["pgrep", "-f", f"sleep {m}"], capture_output=True).returncode != 0,
            what="the container gone with its launcher",
        )
        assert minirun("gc").returncode == 0
        assert records(state_dir) == [] and ipam_reservations(state_dir) == []


def test_teardown_after_the_veth_was_deleted_by_hand(state_dir):
    proc = spawn("run", "sleep", "60")
    (record,) = wait_running(state_dir)
    subprocess.run(["ip", "link", "delete", record["network"]["host_veth"]], check=True)
    os.kill(record["pid"], signal.SIGKILL)
    assert proc.wait(timeout=10) == 137
    assert "error" not in proc.stderr.read()


def test_gc_removes_a_veth_on_the_bridge_that_no_container_owns(state_dir):
    assert minirun("run", "true").returncode == 0  # the bridge exists
    subprocess.run(
        ["ip", "link", "add", "vethdeadbeef", "master", "minirun0", "type", "veth", "peer", "name", "strayp0"],
        check=True,
    )
    proc = spawn("run", "sleep", "30")  # a live container's veth must survive
    (record,) = wait_running(state_dir)
    result = minirun("gc")
    assert result.stdout == "removed link vethdeadbeef (on minirun0, no container)\n"
    links = host_links()
    assert "vethdeadbeef" not in links and record["network"]["host_veth"] in links
    os.kill(record["pid"], signal.SIGKILL)
    proc.wait(timeout=10)


def test_gc_explain_shows_the_teardown_of_a_dead_launchers_container(state_dir):
    proc = spawn("run", "--name", "lost", "sleep", "60")
    (record,) = wait_running(state_dir)
    proc.kill()
    proc.wait()
    wait_for(lambda: not os.path.exists(f"/proc/{record['pid']}"), what="container gone")
    result = minirun("gc", "--explain")
    assert result.returncode == 0
    assert "minirun: step" in result.stderr and f"rm {state_dir}/ipam/minirun/" in result.stderr
    assert f"removed record {record['id']}" in result.stdout
