"""Issue 15, reliability of the new parent: 50 detached runs at once through one supervisor. Every request is
served by its own worker, so all succeed, each container gets its own address, one supervisor owns them all,
and removing them all at once leaves nothing behind (the leak check after every test)."""

from __future__ import annotations

import concurrent.futures
import ipaddress
from pathlib import Path

from tests.integration.conftest import ipam_reservations, minirun, records
from tests.reliability.test_owner_registry import alive, entries

COUNT = 50


def test_fifty_parallel_detached_runs_through_one_supervisor(state_dir: Path):
    def start(i: int) -> str:
        result = minirun("run", "-d", "--name", f"par{i}", "sleep", "300", timeout=240)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    with concurrent.futures.ThreadPoolExecutor(max_workers=COUNT) as pool:
        ids = list(pool.map(start, range(COUNT)))
    assert len(set(ids)) == COUNT
    started = records(state_dir)
    assert sorted(r["id"] for r in started) == sorted(ids)
    assert all(r["status"] == "running" and alive(r["pid"], r["pid_started"]) for r in started)
    owners = {(r["owner"]["pid"], r["owner"]["started"]) for r in started}
    assert len(owners) == 1, f"{len(owners)} supervisors own the containers"
    addresses = [ipaddress.IPv4Interface(r["network"]["address"]).ip for r in started]
    assert len(set(addresses)) == COUNT
    assert len(ipam_reservations(state_dir)) == COUNT

    def remove(i: int) -> None:
        result = minirun("rm", "-f", f"par{i}", timeout=240)
        assert result.returncode == 0 and result.stdout == f"par{i}\n", result.stderr

    with concurrent.futures.ThreadPoolExecutor(max_workers=COUNT) as pool:
        list(pool.map(remove, range(COUNT)))
    assert records(state_dir) == [] and ipam_reservations(state_dir) == []
    assert all(alive(*entry) for entry in entries(state_dir)), "every command left the registry settled"
