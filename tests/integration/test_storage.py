"""Issue 12, hole 8: what containers write lived in RAM. Upper dirs, generated /etc files and logs sat on
the state root (tmpfs /run): a container writing 100 MB filled /run for the whole host, and a detached
container's log grew without bound there. Now they live under the data root (on disk, as Docker's
/var/lib/docker), the log is capped and rotated (--log-opt max-size/max-file, default 10m x 3), and all
of it goes with `rm` or, orphaned, with the next reconcile.

The test sandbox's state root is a directory on the disk and its data root is on the sandbox's /run
tmpfs, so each test here mounts its own small tmpfs on both (the state root's is 64 MiB: a container that
could write 100 MB there would fail, and its usage would show it) and measures them with statvfs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from minirun import paths
from minirun.kernel import syscalls as k
from tests.integration.conftest import minirun, records, spawn, wait_for

MiB = 1 << 20


def used_bytes(path: str | Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@pytest.fixture
def separate_mounts(state_dir: Path):
    """A 64 MiB tmpfs as the state root (as /run is on a host) and another one for what containers
    write, at the data root's rw/ (the images stay where the session built them)."""
    writable = Path(paths.data_root()) / "rw"
    for directory in (state_dir, writable):
        directory.mkdir(parents=True, exist_ok=True)
    k.mount("tmpfs", str(state_dir), "tmpfs", k.MS_NOSUID | k.MS_NODEV, "size=64m,mode=700")
    k.mount("tmpfs", str(writable), "tmpfs", k.MS_NOSUID | k.MS_NODEV, "size=1g,mode=700")
    try:
        yield state_dir, writable
    finally:
        ids = minirun("ps", "-a", "-q").stdout.split()
        if ids:
            minirun("rm", "-f", *ids)
        subprocess.run(["umount", "-l", str(writable)], check=False)
        subprocess.run(["umount", "-l", str(state_dir)], check=False)


def wait_output(name: str, text: str, timeout: float = 60) -> None:
    wait_for(lambda: text in minirun("logs", name).stdout, timeout=timeout, what=f"{text!r} in the log of {name}")


def wait_exited(name: str, timeout: float = 60) -> dict:
    def exited():
        document = json.loads(minirun("inspect", name).stdout or "[{}]")[0]
        return document if document.get("State", {}).get("Status") == "exited" else None

    return wait_for(exited, timeout=timeout, what=f"{name} exited")


@pytest.mark.parametrize("with_image", [True, False], ids=["image", "host-filesystem"])
def test_100_mb_written_by_a_container_land_on_the_data_root(separate_mounts, busybox_image, with_image):
    """Hole 8: a container writing 100 MB (into its root, and into the /etc/hosts minirun bind-mounts
    writable into it) must not fill the state root's tmpfs; the bytes land under the data root and go
    with `rm`."""
    state_root, writable = separate_mounts
    image = ["--image", busybox_image] if with_image else []
    # Without an image the container writes its private /tmp (and /var/tmp, /run) and its /etc files.
    targets = ["/big", "/etc/hosts"] if with_image else ["/tmp/big", "/etc/hosts"]
    script = " && ".join(f"dd if=/dev/zero of={t} bs=1M count=100 2>/dev/null" for t in targets)
    state_before, data_before = used_bytes(state_root), used_bytes(writable)
    started = minirun("run", "-d", "--name", "writer", *image, "sh", "-c", f"{script} && echo written; exec sleep 60")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    wait_output("writer", "written")

    assert used_bytes(state_root) - state_before < 2 * MiB
    assert used_bytes(writable) - data_before >= len(targets) * 100 * MiB
    directory = Path(paths.container_data_dir(container_id))
    assert str(directory).startswith(str(writable))
    assert (directory / "etc" / "hosts").stat().st_size == 100 * MiB
    if with_image:
        assert (directory / "upper" / "big").stat().st_size == 100 * MiB
    else:
        assert (directory / "host" / "tmp" / "big").stat().st_size == 100 * MiB

    removed = minirun("rm", "-f", "writer")
    assert removed.returncode == 0, removed.stderr
    assert not directory.exists()
    assert used_bytes(writable) - data_before < MiB
    assert not records(state_root)


def log_files(container_id: str) -> dict[str, int]:
    directory = Path(paths.container_data_dir(container_id))
    return {p.name: p.stat().st_size for p in directory.iterdir() if ".log" in p.name}


def test_log_is_capped_and_rotated_and_logs_shows_the_tail_in_order(separate_mounts):
    """Hole 8: a detached container printing 50 MB to stdout with --log-opt max-size=1m --log-opt
    max-file=2 leaves at most two log files of at most 1 MiB each, on the data root, nothing on the state
    root; `logs` shows the newest output, bytes exact and in order; `rm` removes every file."""
    state_root, writable = separate_mounts
    state_before = used_bytes(state_root)
    started = minirun(
        "run", "-d", "--name", "talker", "--log-opt", "max-size=1m", "--log-opt", "max-file=2",
        "sh", "-c", "seq 1 6000000; echo end >&2",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    document = wait_exited("talker")
    assert document["HostConfig"]["LogConfig"] == {"Type": "minirun-raw", "Config": {"max-size": "1m", "max-file": "2"}}
    assert document["LogPath"] == paths.container_log(container_id)

    files = log_files(container_id)
    assert set(files) <= {f"{container_id}.log", f"{container_id}.log.1"} and len(files) == 2, files
    assert all(size <= MiB for size in files.values()), files
    assert used_bytes(state_root) - state_before < MiB

    shown = minirun("logs", "talker").stdout
    assert 1.5 * MiB < len(shown) <= 2 * MiB
    lines = shown.splitlines()
    assert lines[-1] == "end"
    numbers = [int(n) for n in lines[1:-1]]  # the first may be cut in the middle by the rotation
    assert numbers == list(range(numbers[0], 6000001))
    assert minirun("logs", "--tail", "3", "talker").stdout == "5999999\n6000000\nend\n"
    assert minirun("logs", "-f", "talker").stdout == shown  # exited: -f prints the same and ends

    assert minirun("rm", "talker").returncode == 0
    assert not Path(paths.container_data_dir(container_id)).exists()


def test_default_log_options_cap_the_log(separate_mounts):
    """Hole 8: without --log-opt a log is capped too (10m x 3, i.e. at most 30 MiB), not unlimited as
    Docker's json-file default is; ~39 MB of output leaves three files of at most 10 MiB."""
    started = minirun("run", "-d", "--name", "chatty", "seq", "1", "5000000")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    document = wait_exited("chatty")
    assert document["HostConfig"]["LogConfig"]["Config"] == {"max-size": "10m", "max-file": "3"}
    files = log_files(container_id)
    assert len(files) == 3 and all(size <= 10 * MiB for size in files.values()), files
    shown = minirun("logs", "--tail", "2", "chatty").stdout
    assert shown == "4999999\n5000000\n"


def test_logs_follow_keeps_up_across_rotations(separate_mounts):
    """`logs -f` follows the log across its rotations: every line, once, in order."""
    # The output starts on SIGUSR1, sent once `logs -f` holds the log open.
    script = (
        "trap 'go=1' USR1; while [ -z \"$go\" ]; do sleep 0.02; done; i=0; "
        "while [ $i -lt 40 ]; do seq $((i*10000+1)) $((i*10000+10000)); i=$((i+1)); sleep 0.05; done"
    )
    started = minirun(
        "run", "-d", "--name", "steady", "--log-opt", "max-size=256k", "--log-opt", "max-file=5", "sh", "-c", script
    )
    assert started.returncode == 0, started.stderr
    log = paths.container_log(started.stdout.strip())
    follower = spawn("logs", "-f", "steady")
    try:
        wait_for(lambda: log in open_files(follower.pid), what="logs -f holding the log open")
        assert minirun("kill", "-s", "USR1", "steady").returncode == 0
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert out.splitlines() == [str(n) for n in range(1, 400001)]


def open_files(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return found


def test_bad_log_options_exit_125_with_one_line():
    """--log-opt is validated as Docker's json-file driver validates it, before anything is created."""
    for options, message in (
        (["max-size=lots"], 'invalid --log-opt max-size "lots"'),
        (["max-size=0"], "must be positive"),
        (["max-file=3"], "max-file needs max-size"),
        (["max-size=1m", "max-file=0"], 'invalid --log-opt max-file "0"'),
        (["mode=non-blocking"], 'unknown log opt "mode"'),
    ):
        args = [part for option in options for part in ("--log-opt", option)]
        result = minirun("run", "-d", *args, "true")
        assert result.returncode == 125, (options, result.stderr)
        assert result.stderr.startswith("minirun: error: ") and message in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    assert minirun("ps", "-a", "-q").stdout == ""


def test_orphaned_directories_on_the_data_root_are_reclaimed(separate_mounts):
    """What a killed minirun (or a reboot, which empties the state root but not the disk) leaves on the
    data root is reclaimed by the next reconcile: a container directory without a record, a pod's /etc
    files without a pod. A directory whose record exists is kept, and so is another state root's."""
    state_root, writable = separate_mounts
    started = minirun("run", "-d", "--name", "alive", "sleep", "60")
    assert started.returncode == 0, started.stderr
    alive = Path(paths.container_data_dir(started.stdout.strip()))
    orphan = Path(paths.container_data_dir("0123456789ab"))
    pod_orphan = Path(paths.pod_data_dir("gone")) / "etc"
    other_state_root = writable / "someotherstateroot" / "containers" / "0123456789ab"
    for directory in (orphan / "upper", pod_orphan, other_state_root):
        directory.mkdir(parents=True)
        (directory / "data").write_bytes(b"x" * 4096)

    collected = minirun("gc")
    assert collected.returncode == 0, collected.stderr
    assert not orphan.exists() and not pod_orphan.parent.exists()
    assert alive.is_dir() and (alive / "etc" / "hosts").exists()
    assert other_state_root.is_dir()
    assert "directory of container 0123456789ab" in collected.stdout
    assert "directory of pod gone" in collected.stdout
    assert minirun("rm", "-f", "alive").returncode == 0
    assert not alive.exists()


def test_a_pods_shared_etc_files_live_on_the_data_root(separate_mounts):
    """Pod members share the pod's /etc files, bind-mounted writable: a member writing 100 MB into
    /etc/hosts fills the data root, not the state root; `pod rm` removes them."""
    state_root, writable = separate_mounts
    state_before = used_bytes(state_root)
    written = minirun(
        "run", "--pod", "shared", "sh", "-c", "dd if=/dev/zero of=/etc/hosts bs=1M count=100 2>/dev/null && echo ok"
    )
    try:
        assert written.returncode == 0 and written.stdout == "ok\n", written.stderr
        hosts = Path(paths.pod_data_dir("shared")) / "etc" / "hosts"
        assert hosts.stat().st_size == 100 * MiB and str(hosts).startswith(str(writable))
        assert used_bytes(state_root) - state_before < 2 * MiB
    finally:
        minirun("pod", "rm", "-f", "shared")
    assert not Path(paths.pod_data_dir("shared")).exists()
