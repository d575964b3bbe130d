"""Issue 15, Docker's semantics: `create`, then `start` and `restart` (runtime/container/stopped.py). A created
container holds only its record and name; started, it runs detached through the supervisor; started again, it
keeps its id, name, written files and log, and gets an address and a veth again."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

from tests.integration.conftest import host_links, ipam_reservations, minirun, records, wait_for
from tests.reliability.test_owner_registry import alive

# Each run appends a line to a file in its writable layer and prints what earlier runs wrote.
SCRIPT = "cat /data 2>/dev/null; echo run >> /data; echo up; sleep 300"


def the_record(state_dir: Path, name: str) -> dict:
    return next(r for r in records(state_dir) if r["name"] == name)


def running(state_dir: Path, name: str) -> bool:
    record = the_record(state_dir, name)
    return record["status"] == "running" and alive(record["pid"], record["pid_started"])


def veths() -> list[str]:
    return [name for name in host_links() if name.startswith("veth")]


def test_create_then_start_restart_and_start_again_keep_the_same_container(state_dir: Path, busybox_image: str):
    created = minirun("create", "--name", "keep", "--image", busybox_image, "sh", "-c", SCRIPT)
    assert created.returncode == 0, created.stderr
    container_id = created.stdout.strip()
    record = the_record(state_dir, "keep")
    assert record["id"] == container_id and record["status"] == "created" and "pid" not in record
    assert ipam_reservations(state_dir) == [] and veths() == []  # nothing but the record and the name
    assert (state_dir / "names" / "keep").read_text().strip() == container_id
    assert "Created" in minirun("ps", "-a").stdout and "keep" not in minirun("ps").stdout
    assert minirun("gc").returncode == 0  # the full reconcile leaves a created container alone
    assert the_record(state_dir, "keep")["status"] == "created"

    started = minirun("start", "keep")
    assert started.returncode == 0 and started.stdout == "keep\n", started.stderr
    wait_for(lambda: running(state_dir, "keep"), what="started")
    wait_for(lambda: minirun("logs", "keep").stdout == "up\n", what="its first output")
    first_pid = the_record(state_dir, "keep")["pid"]
    assert len(ipam_reservations(state_dir)) == 1 and len(veths()) == 1

    restarted = minirun("restart", "-t", "1", "keep")
    assert restarted.returncode == 0 and restarted.stdout == "keep\n", restarted.stderr
    wait_for(lambda: running(state_dir, "keep"), what="running again")
    again = the_record(state_dir, "keep")
    assert again["id"] == container_id and again["pid"] != first_pid
    assert again["created"] == record["created"]
    # The file written by the first run is still there, and the log goes on.
    wait_for(lambda: minirun("logs", "keep").stdout == "up\nrun\nup\n", what="the second run's output")
    assert len(ipam_reservations(state_dir)) == 1 and len(veths()) == 1

    assert minirun("stop", "-t", "0", "keep").returncode == 0
    assert the_record(state_dir, "keep")["status"] == "exited"
    wait_for(lambda: ipam_reservations(state_dir) == [] and veths() == [], what="its address and veth released")
    assert minirun("start", "keep").returncode == 0
    assert minirun("start", "keep").stdout == "keep\n"  # starting a running container is no error (Docker's)
    wait_for(lambda: minirun("logs", "keep").stdout.endswith("run\nrun\nup\n"), what="the third run's output")
    assert minirun("rm", "-f", "keep").returncode == 0


def test_start_attach_prints_this_runs_output_and_exits_with_its_code(state_dir: Path):
    assert minirun("create", "--name", "once", "sh", "-c", "echo out; echo err >&2; exit 7").returncode == 0
    for _ in range(2):  # the second time, only the second run's output: not the log's history
        attached = minirun("start", "-a", "once")
        assert attached.returncode == 7 and attached.stdout == "out\nerr\n", attached.stderr
    assert minirun("logs", "once").stdout == "out\nerr\n" * 2
    two = minirun("start", "-a", "once", "other")
    assert two.returncode == 1 and "start -a takes one container" in two.stderr
    assert minirun("rm", "once").returncode == 0


def test_parallel_starts_run_one_container(state_dir: Path):
    assert minirun("create", "--name", "once", "sleep", "300").returncode == 0

    def start(_: int) -> int:
        return minirun("start", "once", timeout=120).returncode

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(start, range(6))) == [0] * 6
    wait_for(lambda: running(state_dir, "once"), what="started")
    assert len(ipam_reservations(state_dir)) == 1 and len(veths()) == 1
    assert minirun("rm", "-f", "once").returncode == 0


def test_a_failed_start_keeps_the_container(state_dir: Path):
    assert minirun("create", "--name", "broken", "no-such-command").returncode == 0
    failed = minirun("start", "broken")
    assert failed.returncode == 1 and "no-such-command" in failed.stderr, failed.stderr
    record = the_record(state_dir, "broken")
    assert record["status"] == "exited" and record["exit_code"] == 127
    assert ipam_reservations(state_dir) == [] and veths() == []
    assert minirun("rm", "broken").returncode == 0
    assert records(state_dir) == []


def test_create_refuses_what_docker_refuses_and_leaves_nothing(state_dir: Path):
    detached = minirun("create", "-d", "true")
    assert detached.returncode == 125 and "create takes no -d" in detached.stderr
    no_network = minirun("create", "--network", "nosuch", "true")
    assert no_network.returncode != 0 and "nosuch" in no_network.stderr
    assert "Traceback" not in no_network.stderr and len(no_network.stderr.strip().splitlines()) <= 2
    assert minirun("create", "--name", "taken", "true").returncode == 0
    conflict = minirun("create", "--name", "taken", "true")
    assert conflict.returncode != 0 and "already in use" in conflict.stderr
    assert [r["name"] for r in records(state_dir)] == ["taken"]
    assert minirun("rm", "taken").returncode == 0
    assert records(state_dir) == []
    gone = minirun("start", "nosuch")
    assert gone.returncode == 1 and "no such container: nosuch" in gone.stderr
