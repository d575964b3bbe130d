"""Issue 13, item 2: "rebuild what can be rebuilt from the kernel (a running PID 1 with its netns, veth,
address)". A damaged record of a container that still runs was only set aside: `ps` forgot the container,
`stop`, `rm`, `inspect` and `logs` said "no such container", and its address, name and veth stayed reserved
until an operator released them by hand (cutting the network of a process that still ran). Now its record
is rebuilt from the kernel and minirun's own files, never from what the container could forge."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from minirun import paths
from minirun.kernel import proc
from tests.integration.conftest import (
    host_links,
    ipam_reservations,
    minirun,
    nft_ruleset,
    records,
    wait_for,
)

_STARTED: list[dict] = []  # the records of the containers this test started


@pytest.fixture(autouse=True)
def _nothing_left_running(clean_slate):
    """Whatever an assertion interrupted: a container whose record was damaged and never rebuilt has no record
    that `rm` could find. Its holdings are released and its PID 1 (if still the same process) killed."""
    _STARTED.clear()
    yield
    minirun("gc", "--damaged", "-f")
    for record in _STARTED:
        if running(record):
            os.kill(record["pid"], signal.SIGKILL)


def damage(state_dir: Path, container_id: str) -> None:
    (state_dir / "containers" / f"{container_id}.json").write_text("{")


def damaged_files(state_dir: Path) -> list[str]:
    return sorted(p.name for p in (state_dir / "containers").glob("*.json.damaged-*"))


def running(record: dict) -> bool:
    """Its PID 1 is still the process that started then, and has not ended (a zombie has)."""
    return proc.is_alive(record["pid"], record["pid_started"])


def start(*args: str) -> dict:
    started = minirun("run", "-d", *args)
    assert started.returncode == 0, started.stderr
    (record,) = [r for r in records(Path(os.environ["MINIRUN_STATE_DIR"])) if r["id"] == started.stdout.strip()]
    _STARTED.append(record)
    return record


def test_a_running_containers_damaged_record_is_rebuilt_and_it_is_managed_again(state_dir: Path):
    """`echo '{' > containers/ID.json` while a detached container ran: it vanished from `ps`, and `rm -f`,
    `inspect`, `logs` said "no such container". Its record is rebuilt (same PID 1, name, address, veth), all
    of those work, and `rm -f` releases its address (on a full /29 the next container gets it), veth and
    name; the damaged file stays until `gc --damaged -f`."""
    assert minirun("network", "create", "small", "--subnet", "10.98.0.0/29").returncode == 0
    victim = start("--name", "victim", "--network", "small", "sh", "-c", "echo ready; exec sleep 300")
    for index in range(4):  # .3 to .6: the /29 is full
        start("--name", f"filler{index}", "--network", "small", "sleep", "300")
    address = victim["network"]["address"].split("/")[0]
    veth = victim["network"]["host_veth"]
    wait_for(lambda: "ready" in minirun("logs", "victim").stdout, what="the victim's output")
    damage(state_dir, victim["id"])

    listing = minirun("ps", "--format", "json")
    assert listing.returncode == 0, listing.stderr
    assert listing.stderr.count("rebuilt from the kernel") == 1, listing.stderr
    rows = {row["Names"]: row for row in map(json.loads, listing.stdout.splitlines())}
    assert rows["victim"]["ID"] == victim["id"] and rows["victim"]["IP"] == address
    assert rows["victim"]["Status"].startswith("Up")
    (rebuilt,) = [r for r in records(state_dir) if r["id"] == victim["id"]]
    assert rebuilt["rebuilt"] is True and (rebuilt["pid"], rebuilt["pid_started"]) == (
        victim["pid"],
        victim["pid_started"],
    )
    assert rebuilt["network"] == victim["network"] and rebuilt["owner"] == victim["owner"]
    assert "command" not in rebuilt and "command" in rebuilt["unknown"]  # never guessed from /proc/PID/cmdline
    assert len(damaged_files(state_dir)) == 1

    document = json.loads(minirun("inspect", "victim").stdout)[0]
    assert document["State"]["Pid"] == victim["pid"] and document["State"]["Running"] is True
    assert document["NetworkSettings"]["IPAddress"] == address and document["NetworkSettings"]["HostVeth"] == veth
    assert "env" in document["Rebuilt"]["Unknown"]
    assert "ready" in minirun("logs", "victim").stdout
    assert minirun("exec", "victim", "true").returncode == 0
    assert minirun("gc").returncode == 0 and veth in host_links()
    full = minirun("run", "--rm", "--network", "small", "true")
    assert full.returncode == 125 and "no free address" in full.stderr, full.stderr  # still held

    assert minirun("rm", "-f", "victim").returncode == 0
    assert not running(victim)
    wait_for(lambda: veth not in host_links(), what="the victim's veth gone")
    assert not (state_dir / "names" / "victim").exists()
    assert not any(r.endswith(f"/{address}") for r in ipam_reservations(state_dir))
    successor = minirun("run", "--rm", "--network", "small", "ip", "-4", "-br", "addr", "show", "eth0")
    assert successor.returncode == 0 and f"{address}/29" in successor.stdout, successor.stdout + successor.stderr
    assert len(damaged_files(state_dir)) == 1  # kept for forensics
    assert "rebuilt" not in minirun("gc", "--damaged").stdout
    assert minirun("gc", "--damaged", "-f").returncode == 0
    assert damaged_files(state_dir) == []


def test_stop_of_a_rebuilt_container_records_its_exit_and_releases_everything(state_dir: Path):
    """The rebuilt record names the PID 1 the supervisor reaps: `stop` ends it, its own exit code is
    recorded (not 255, "unknown"), and its veth and address go as for any container."""
    script = 'trap "exit 3" TERM; echo ready; while :; do sleep 0.1; done'
    victim = start("--name", "stopped", "sh", "-c", script)
    wait_for(lambda: "ready" in minirun("logs", "stopped").stdout, what="the trap set")
    damage(state_dir, victim["id"])
    assert "stopped" in minirun("ps").stdout

    assert minirun("stop", "-t", "5", "stopped").returncode == 0
    assert "Exited (3)" in minirun("ps", "-a").stdout
    wait_for(lambda: victim["network"]["host_veth"] not in host_links(), what="the veth gone")
    assert ipam_reservations(state_dir) == []
    assert minirun("rm", "stopped").returncode == 0
    assert records(state_dir) == [] and not (state_dir / "names" / "stopped").exists()
    minirun("gc", "--damaged", "-f")


def test_a_dead_containers_damaged_record_is_not_rebuilt(state_dir: Path):
    """A container that ended while its record was damaged is not rebuilt (no record would be true): its
    record stays set aside and its address and name stay reserved until `gc --damaged -f`."""
    victim = start("--name", "gone", "sleep", "300")
    address = victim["network"]["address"].split("/")[0]
    damage(state_dir, victim["id"])
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: not running(victim), what="the container gone")

    listing = minirun("ps", "-a")
    assert "gone" not in listing.stdout and "not rebuilt" in listing.stderr, listing.stdout + listing.stderr
    assert records(state_dir) == []
    assert "not rebuilt" in minirun("gc", "--damaged", "--rebuild").stdout
    shown = minirun("gc", "--damaged").stdout
    assert f"address {address}" in shown and "name gone" in shown, shown
    assert minirun("gc", "--damaged", "-f").returncode == 0
    assert ipam_reservations(state_dir) == [] and damaged_files(state_dir) == []


def test_a_pod_members_damaged_record_is_rebuilt(state_dir: Path):
    """A pod member has no veth or address of its own: its PID 1 is the one that sees the member's own
    directory at its /tmp (a bind mount only minirun makes), in the pod's network namespace."""
    assert minirun("pod", "create", "pp").returncode == 0
    member = start("--pod", "pp", "--name", "member", "sleep", "300")
    start("--pod", "pp", "--name", "sibling", "sleep", "300")
    damage(state_dir, member["id"])

    rows = {r["Names"]: r for r in map(json.loads, minirun("ps", "--format", "json").stdout.splitlines())}
    assert rows["member"]["ID"] == member["id"] and rows["member"]["Pod"] == "pp"
    (rebuilt,) = [r for r in records(state_dir) if r["id"] == member["id"]]
    assert rebuilt["pid"] == member["pid"] and rebuilt["network_mode"] == "pod" and rebuilt["pod"] == "pp"
    assert minirun("rm", "-f", "member").returncode == 0
    assert not running(member) and not (state_dir / "names" / "member").exists()
    assert "sibling" in minirun("ps").stdout and os.path.exists("/run/netns/minirun-pp")
    minirun("gc", "--damaged", "-f")


def test_a_hostile_container_pointing_at_anothers_directory_is_not_taken_for_it(state_dir: Path, busybox_image: str):
    """A container is PID 1 of X when it sees X's own directory at /tmp. A hostile one replaces its /tmp
    with a link to X's directory on the host: followed from the host (/proc/PID/root/tmp), that link leads
    to X's files, and X's rebuild would find two candidates (or, were X dead, adopt the impostor). The walk
    never follows a link, so X's record is rebuilt with X's own PID 1, and `rm -f` ends X, not the other."""
    victim = start("--name", "victim", "--network", "none", "sleep", "300")
    victim_tmp = os.path.join(paths.container_data_dir(victim["id"]), "host", "tmp")
    assert os.path.isdir(victim_tmp)
    hostile = start(
        "--image",
        busybox_image,
        "--name",
        "impostor",
        "--network",
        "none",
        "sh",
        "-c",
        f"rm -rf /tmp && ln -s {victim_tmp} /tmp && echo linked && exec sleep 300",
    )
    wait_for(lambda: "linked" in minirun("logs", "impostor").stdout, what="the impostor's link")
    followed, real = os.stat(f"/proc/{hostile['pid']}/root/tmp"), os.stat(victim_tmp)
    assert (followed.st_dev, followed.st_ino) == (real.st_dev, real.st_ino)  # the trap is set
    damage(state_dir, victim["id"])

    listing = minirun("ps")
    assert "rebuilt from the kernel" in listing.stderr, listing.stderr
    (rebuilt,) = [r for r in records(state_dir) if r["id"] == victim["id"]]
    assert rebuilt["pid"] == victim["pid"]
    assert minirun("rm", "-f", "victim").returncode == 0
    assert not running(victim) and running(hostile)
    minirun("gc", "--damaged", "-f")


def test_a_rebuilt_container_keeps_its_published_ports(state_dir: Path):
    """Its published ports are read back from the DNAT rules tagged with its id (never from the container):
    `ps` shows them, another container cannot publish the same host port, and `rm -f` removes the rules."""
    victim = start("--name", "web", "-p", "18080:80", "sleep", "300")
    damage(state_dir, victim["id"])
    assert "0.0.0.0:18080->80/tcp" in minirun("ps").stdout
    clash = minirun("run", "--rm", "-p", "18080:80", "true")
    assert clash.returncode == 125 and "already published by container web" in clash.stderr, clash.stderr
    assert minirun("rm", "-f", "web").returncode == 0
    assert f"owner={victim['id']}" not in nft_ruleset()
    minirun("gc", "--damaged", "-f")
