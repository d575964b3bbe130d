"""Issue 13 item 5: the per-run cost stays flat with many containers up, because a command skips the full
reconcile when every process that may be changing state is alive (runtime/owners.py). These tests show the
skipping never skips what a dead owner left: a killed launcher, a killed supervisor, state from a minirun
that had no registry. (The figures: tests/bench/bench_scale.py.)"""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

from tests.integration.conftest import host_links, ipam_reservations, minirun, records, spawn, wait_for, wait_running


def entries(state_dir: Path) -> list[tuple[int, int]]:
    directory = state_dir / "owners"
    found = []
    for name in os.listdir(directory) if directory.is_dir() else []:
        pid, _, started = name.partition("-")
        if pid.isdigit() and started.isdigit():  # not the "pending" mark of an unsettled pass
            found.append((int(pid), int(started)))
    return found


def alive(pid: int, started: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] not in (b"Z", b"X") and int(fields[19]) == started


def test_finished_commands_leave_no_entry(state_dir: Path):
    """A dead entry would make every later command do the full pass: after ordinary commands, foreground
    and detached, succeeding and failing, only live processes (the supervisor) are entered."""
    assert minirun("run", "--rm", "true").returncode == 0
    assert minirun("run", "--rm", "sh", "-c", "exit 3").returncode == 3
    assert minirun("run", "-d", "--name", "bg", "sleep", "300").returncode == 0
    assert minirun("ps").returncode == 0
    assert minirun("rm", "-f", "bg").returncode == 0
    assert minirun("run", "--rm", "no-such-command").returncode == 127
    assert (state_dir / "owners").is_dir(), "the commands entered themselves"
    found = entries(state_dir)  # the supervisor's, unless it has idled out already
    assert all(alive(*entry) for entry in found), found


def test_a_killed_launcher_is_looked_after_by_the_next_run(state_dir: Path):
    """kill -9 of a foreground `run`: the next `run` (not a listing) finds its entry dead, tears the
    container down and takes the entry out."""
    launcher = spawn("run", "--name", "fg", "sleep", "300")
    (record,) = wait_running(state_dir)
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait(timeout=10)
    assert any(entry[0] == launcher.pid for entry in entries(state_dir))
    assert minirun("run", "--rm", "true").returncode == 0
    assert records(state_dir) == [] and ipam_reservations(state_dir) == []
    wait_for(lambda: record["network"]["host_veth"] not in host_links(), what="the killed run's veth gone")
    assert all(alive(*entry) for entry in entries(state_dir))


def _owner(state_dir: Path, container_id: str) -> tuple[int, int] | None:
    record = next((r for r in records(state_dir) if r["id"] == container_id), None)
    return None if record is None else (record["owner"]["pid"], record["owner"]["started"])


def test_a_killed_supervisors_containers_are_adopted_by_the_next_one(state_dir: Path):
    """Issue 15: kill -9 of the supervisor while its containers run: they run on, and the next command starts
    a supervisor that adopts them. When they end, it tears them down by itself (no other minirun command
    runs meanwhile): the exit is recorded as 255 (only the killed parent could have learnt the real code),
    the address released, a --rm one removed. Then no dead owner is left to make commands look."""
    assert minirun("run", "-d", "--name", "kept", "sleep", "300").returncode == 0
    assert minirun("run", "-d", "--rm", "--name", "gone", "sleep", "300").returncode == 0
    kept, gone = sorted(records(state_dir), key=lambda r: r["name"] != "kept")
    old = (kept["owner"]["pid"], kept["owner"]["started"])
    os.kill(old[0], signal.SIGKILL)
    wait_for(lambda: not alive(*old), what="the supervisor dead")
    assert minirun("run", "--rm", "true").returncode == 0
    wait_for(lambda: _owner(state_dir, kept["id"]) not in (None, old), what="a new supervisor adopting them")
    new = _owner(state_dir, kept["id"])
    assert new is not None and alive(*new) and _owner(state_dir, gone["id"]) == new
    assert [r["status"] for r in records(state_dir)] == ["running", "running"]
    os.kill(kept["pid"], signal.SIGKILL)
    os.kill(gone["pid"], signal.SIGKILL)
    wait_for(
        lambda: [(r["name"], r["status"]) for r in records(state_dir)] == [("kept", "exited")],
        what="the adopted containers torn down by the new supervisor",
    )
    (after,) = records(state_dir)
    assert after["exit_code"] == 255 and ipam_reservations(state_dir) == []
    wait_for(lambda: kept["network"]["host_veth"] not in host_links(), what="the veth gone")
    assert re.search(r"kept .*Exited \(255\)", minirun("ps", "-a").stdout)
    assert all(alive(*entry) for entry in entries(state_dir)), "the killed supervisor's entry is settled"
    assert minirun("rm", "kept").returncode == 0


def test_state_without_a_registry_is_adopted(state_dir: Path):
    """State written by a minirun that had no registry (a running supervisor not entered): the first
    command enters the owners it finds on record, so their death is noticed later."""
    assert minirun("run", "-d", "--name", "old", "sleep", "300").returncode == 0
    (record,) = records(state_dir)
    shutil.rmtree(state_dir / "owners")
    assert minirun("run", "--rm", "true").returncode == 0
    supervisor = (record["owner"]["pid"], record["owner"]["started"])
    assert supervisor in entries(state_dir)
    os.kill(supervisor[0], signal.SIGKILL)
    os.kill(record["pid"], signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{record['pid']}"), what="the container gone")
    assert minirun("run", "--rm", "true").returncode == 0
    assert [r["status"] for r in records(state_dir)] == ["exited"]
    assert ipam_reservations(state_dir) == []
    assert minirun("rm", "old").returncode == 0


def test_a_record_damaged_while_nobody_died_is_noticed_by_the_next_lookup(state_dir: Path):
    """The fast path skips the full pass when no minirun process died, so nothing has seen a record damaged
    by hand: `stop NAME` (a lookup, not a listing) must still set it aside and rebuild it, not say "no such
    container" while the container runs."""
    assert minirun("run", "-d", "--name", "handled", "sleep", "300").returncode == 0
    (record,) = records(state_dir)
    (state_dir / "containers" / f"{record['id']}.json").write_text("{")
    stopped = minirun("stop", "-t", "1", "handled")
    assert stopped.returncode == 0 and "rebuilt from the kernel" in stopped.stderr, stopped.stderr
    assert not os.path.exists(f"/proc/{record['pid']}")
    assert minirun("rm", "handled").returncode == 0
    assert minirun("gc", "--damaged", "-f").returncode == 0


def _proc_counter(pid: int, path: str, key: str) -> int:
    with open(f"/proc/{pid}/{path}") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def test_the_idle_supervisor_reads_no_record_however_many_containers_run(state_dir: Path):
    """Item 5: with 200 containers the idle supervisor re-read every record every 0.5 s to decide whether
    it was idle. Containers that closed their output (so no log relay keeps it busy) made it read them all
    on every wake; it now asks the kernel whether it has a child left instead. Observed over 5 of its wakes
    (each one a voluntary context switch, in select)."""
    script = "exec >/dev/null 2>&1; sleep 300"
    for i in range(20):
        assert minirun("run", "-d", "--name", f"quiet{i}", "sh", "-c", script).returncode == 0
    supervisor = records(state_dir)[0]["owner"]["pid"]
    wait_for(lambda: len(os.listdir(f"/proc/{supervisor}/fd")) < 20, what="the log relays ended (EOF)")
    reads = _proc_counter(supervisor, "io", "syscr:")
    wakes = _proc_counter(supervisor, "status", "voluntary_ctxt_switches:")
    wait_for(
        lambda: _proc_counter(supervisor, "status", "voluntary_ctxt_switches:") >= wakes + 5,
        what="five wakes of the supervisor",
    )
    reads = _proc_counter(supervisor, "io", "syscr:") - reads
    assert reads < 20, f"{reads} read(2) calls in five wakes of an idle supervisor with 20 containers"
    assert minirun("rm", "-f", *(f"quiet{i}" for i in range(20)), timeout=120).returncode == 0


def test_a_damaged_member_record_still_keeps_its_pod_and_network_in_use(state_dir: Path):
    """Review of the fast path: with a member's record damaged while no minirun process had died, `pod rm`
    (without -f) removed the pod under its running member (which lost eth0) and `network rm` deleted a
    running container's bridge: both decided "unused" from records that skipped the damaged one. Verbs that
    decide from every record look at everything first (the damaged record is set aside and rebuilt)."""
    assert minirun("network", "create", "held").returncode == 0
    assert minirun("pod", "create", "p").returncode == 0
    assert minirun("run", "-d", "--pod", "p", "--name", "member", "sleep", "300").returncode == 0
    assert minirun("run", "-d", "--network", "held", "--name", "user", "sleep", "300").returncode == 0
    for record in records(state_dir):
        (state_dir / "containers" / f"{record['id']}.json").write_text("{")
    refused = minirun("pod", "rm", "p")
    assert refused.returncode != 0 and "running member" in refused.stderr, refused.stderr
    assert "eth0" in minirun("exec", "member", "ip", "-br", "link").stdout
    refused = minirun("network", "rm", "held")
    assert refused.returncode != 0 and "in use" in refused.stderr, refused.stderr
    assert minirun("rm", "-f", "member", "user").returncode == 0
    assert minirun("pod", "rm", "p").returncode == 0 and minirun("network", "rm", "held").returncode == 0
    assert minirun("gc", "--damaged", "-f").returncode == 0


def test_an_upgrade_that_finds_an_unwatched_container_keeps_looking(state_dir: Path):
    """Review of the fast path: state from before the registry whose supervisor was already dead. The first
    command's full pass found the container unwatched but had no dead entry to keep, so later commands took
    the fast path and its exit was never recorded (address and name held forever). An unsettled pass now
    leaves a "pending" entry, and starts a supervisor that adopts the container (issue 15)."""
    assert minirun("run", "-d", "--name", "u", "sleep", "300").returncode == 0
    (record,) = records(state_dir)
    os.kill(record["owner"]["pid"], signal.SIGKILL)
    wait_for(lambda: not alive(record["owner"]["pid"], record["owner"]["started"]), what="the supervisor dead")
    shutil.rmtree(state_dir / "owners")
    assert minirun("run", "--rm", "true").returncode == 0
    os.kill(record["pid"], signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{record['pid']}"), what="the container gone")
    wait_for(lambda: [r["status"] for r in records(state_dir)] == ["exited"], what="its exit recorded")
    assert minirun("run", "--rm", "--name", "u2", "true").returncode == 0
    (after,) = records(state_dir)
    assert after["status"] == "exited" and ipam_reservations(state_dir) == []
    assert minirun("rm", "u").returncode == 0
