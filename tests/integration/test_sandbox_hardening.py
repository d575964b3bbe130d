"""Sandbox hardening (issue 12, holes 1, 2 and 6): each test performs an attack a security review carried
out from inside a container, and fails if the attack succeeds. The hole it closes is in its docstring."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from minirun.fs.masks import MASKED_PATHS
from minirun.kernel import syscalls as k
from tests.integration.conftest import minirun, records, wait_for, wait_running

DOCKER_DEFAULT_CAPS = "00000000a80425fb"
MARKER = b"minirun-host-disk-secret-0123456789"
# Every place a default container can create files in: its device nodes must never work there.
IMAGE_WRITABLE = ("/tmp", "/root", "/dev", "/dev/shm")
HOST_MODE_WRITABLE = ("/tmp", "/var/tmp", "/run", "/dev", "/dev/shm")

# Tries to open the device node $1 for reading (and prints what it read), then for writing (the byte the
# disk already starts with); prints one line per attempt: ok, or the error. Busybox-compatible, so it
# runs in the image and on the host tree.
OPEN_PROBE = """
node=$1
if out=$(head -c 64 "$node" 2>&1); then echo "read:ok:$out"; else echo "read:$out"; fi
if out=$(printf m 2>&1 >> "$node"); then echo write:ok; else echo "write:$out"; fi
"""


@pytest.fixture
def host_disk(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A loop device (the stand-in for a host disk) holding MARKER; yields its (major, minor)."""
    backing = tmp_path / "disk.img"
    backing.write_bytes(MARKER + b"\0" * (1024 * 1024 - len(MARKER)))
    device = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        rdev = os.stat(device).st_rdev
        yield os.major(rdev), os.minor(rdev)
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)


def node_attack(where: str, disk: tuple[int, int]) -> str:
    """A container's shell script: mknod a block node with the disk's numbers in `where`, then open it."""
    node = f"{where}/hostdisk"
    return f"mknod {node} b {disk[0]} {disk[1]} || exit 3; sh -c '{OPEN_PROBE}' probe {node}; rm -f {node}"


def assert_refused(result: subprocess.CompletedProcess, where: str) -> None:
    assert result.returncode == 0, f"{where}: mknod itself should work (CAP_MKNOD), got {result.stderr}"
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    assert MARKER.decode() not in result.stdout, f"{where}: the container read the host disk"
    for mode in ("read", "write"):
        assert not lines[mode].startswith("ok"), f"{where}: {mode} open of the host disk succeeded"
        assert "Permission denied" in lines[mode] or "Operation not permitted" in lines[mode], lines[mode]


def test_image_container_cannot_open_a_host_disk_it_mknods(busybox_image, host_disk):
    """Hole 1: in an --image container, `mknod /tmp/d b MAJ MIN` with a host disk's numbers, then reading
    it, returned the host's data, and it opened read-write too. Every mount it can write to is nodev now."""
    for where in IMAGE_WRITABLE:
        result = minirun("run", "--rm", "--image", busybox_image, "sh", "-c", node_attack(where, host_disk))
        assert_refused(result, f"--image {where}")


def test_host_mode_container_cannot_open_a_host_disk_it_mknods(host_disk):
    """Hole 1, without --image: the writable places of the host view (private tmpfs, /dev) are nodev."""
    for where in HOST_MODE_WRITABLE:
        result = minirun("run", "--rm", "sh", "-c", node_attack(where, host_disk))
        assert_refused(result, f"host mode {where}")


def test_privileged_containers_may_use_the_devices_they_make(busybox_image, host_disk, private_mount: Path):
    """--privileged lifts nodev, as Docker's --privileged lifts its devices cgroup: the same attack works
    (so the tests above would see a device that opens). Without an image a privileged container writes
    the host's tree; the node goes on the test's own tmpfs there."""
    for options, where in ((("--image", busybox_image), "/dev"), ((), str(private_mount))):
        result = minirun("run", "--rm", "--privileged", *options, "sh", "-c", node_attack(where, host_disk))
        assert result.returncode == 0, result.stderr
        assert f"read:ok:{MARKER.decode()}" in result.stdout, result.stdout
        assert "write:ok" in result.stdout, result.stdout


def test_the_bound_devices_still_work(busybox_image):
    """nodev on /dev must not break the devices a container needs: they are bound in from a scratch mount."""
    script = "head -c 4 /dev/zero | od -An -tx1; echo gone > /dev/null && echo null-ok; head -c 8 /dev/urandom | wc -c"
    for options in (("--image", busybox_image), ()):
        result = minirun("run", "--rm", *options, "sh", "-c", script)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["00", "00", "00", "00", "null-ok", "8"], result.stdout
    mounts = minirun("run", "--rm", "--image", busybox_image, "cat", "/proc/self/mountinfo").stdout
    dev_line = next(line for line in mounts.splitlines() if line.split()[4] == "/dev")
    assert "nodev" in dev_line.split()[5], dev_line
    root_line = next(line for line in mounts.splitlines() if line.split()[4] == "/")
    assert "nodev" in root_line.split()[5], root_line


@pytest.fixture
def private_mount(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs on /mnt/minirun-test in the test's own mount namespace: a host submount outside /tmp and
    /run, where the test can also put a state or data root that is not under a covered directory."""
    target = Path("/mnt/minirun-test")
    target.mkdir(exist_ok=True)
    k.mount("tmpfs", str(target), "tmpfs", 0, "mode=755")
    try:
        yield target
    finally:
        k.umount2(str(target), k.MNT_DETACH)
        with contextlib.suppress(OSError):
            target.rmdir()


def test_host_mode_sees_the_host_read_only(private_mount: Path):
    """Hole 2: without --image a default container wrote the host's /etc and /usr/local/bin. Now every
    host mount is read-only inside, submounts included, and only private tmpfs dirs are writable."""
    (private_mount / "host-file").write_text("host\n")
    attempts = ["/etc/minirun-pwned", "/usr/local/bin/minirun-pwned", "/root/minirun-pwned"]
    attempts.append(f"{private_mount}/minirun-pwned")  # a submount of the host's tree
    script = "; ".join(f"touch {path} 2>/dev/null && echo WROTE {path}" for path in attempts)
    inside = f"/tmp/minirun-inside-{os.getpid()}"
    script += f"; cat {private_mount}/host-file; echo private > {inside}; cat {inside}"
    try:
        result = minirun("run", "--rm", "sh", "-c", script)
    finally:
        leaked = [path for path in attempts if os.path.exists(path)]
        for path in leaked:
            os.unlink(path)
    assert result.returncode == 0, result.stderr
    assert "WROTE" not in result.stdout and not leaked, result.stdout
    assert result.stdout.split() == ["host", "private"]  # still readable, as with bubblewrap's --ro-bind / /
    assert not os.path.exists(inside)  # the container's /tmp is its own
    mounts = minirun("run", "--rm", "cat", "/proc/self/mountinfo").stdout.splitlines()
    by_target = {line.split()[4]: line.split()[5].split(",") for line in mounts}
    assert "ro" in by_target["/"] and "ro" in by_target[str(private_mount)]
    assert "ro" in by_target["/sys"]
    for writable in ("/tmp", "/var/tmp", "/run", "/dev"):
        assert "rw" in by_target[writable] and "nodev" in by_target[writable], (writable, by_target[writable])
    masked = [path for path in MASKED_PATHS if os.path.exists(path)]
    assert masked and all(path in by_target for path in masked), masked  # Docker's masked paths


def test_host_mode_has_the_minimal_dev():
    """Hole 2: the host's /dev (its disks among it) is replaced by the minimal /dev of image mode."""
    result = minirun("run", "--rm", "ls", "/dev")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {
        *("fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm"),
        *("stderr", "stdin", "stdout", "tty", "urandom", "zero"),
    }


def test_host_mode_never_sees_minirun_state_data_or_netns_pins(private_mount: Path, state_dir: Path, clean_slate):
    """Hole 2: a default container read every other container's env and logs in the state dir and could
    talk to the supervisor socket. The state root, the data root and /run/netns are hidden, wherever
    they are (here both roots sit outside the private /tmp and /run, on a host submount)."""
    state = private_mount / "state"
    data = private_mount / "data"
    env = {"MINIRUN_STATE_DIR": str(state), "MINIRUN_DATA_DIR": str(data)}
    data.mkdir()
    (data / "secret").write_text("data-root\n")
    started = minirun("run", "-d", "--name", "victim", "-e", "TOKEN=s3cret", "sleep", "60", env=env)
    assert started.returncode == 0, started.stderr
    assert minirun("pod", "create", "neighbours", env=env).returncode == 0
    try:
        wait_for(lambda: any(r.get("status") == "running" for r in records(state)), what="the victim running")
        assert (state / "supervisor.sock").exists()
        script = (
            f"ls -A {state} {data} /run/netns 2>&1; cat {state}/containers/*.json {data}/secret 2>&1; "
            f"grep -rs s3cret {private_mount} /run /tmp; ls /run/netns/minirun-neighbours 2>&1; true"
        )
        result = minirun("run", "--rm", "sh", "-c", script, env=env)
        assert result.returncode == 0, result.stderr
        assert "s3cret" not in result.stdout and "data-root" not in result.stdout, result.stdout
        assert "supervisor.sock" not in result.stdout and ".json" not in result.stdout.replace("*.json", "")
        assert "No such file" in result.stdout  # /run/netns/minirun-neighbours
        # From a working directory inside the state root: the same path in the new view, empty.
        from_inside = minirun("run", "--rm", "sh", "-c", "pwd; ls -A", env=env, cwd=str(state))
        assert from_inside.stdout.split() == [str(state)], from_inside.stdout
    finally:
        minirun("rm", "-f", "victim", env=env)
        minirun("pod", "rm", "-f", "neighbours", env=env)
        wait_for(lambda: not records(state), what="the victim removed")


def test_privileged_host_mode_keeps_the_host_writable(private_mount: Path):
    """--privileged keeps the old behaviour (host files writable), as its --help says."""
    target = private_mount / "written-by-privileged"
    result = minirun("run", "--rm", "--privileged", "sh", "-c", f"echo yes > {target}")
    assert result.returncode == 0, result.stderr
    assert target.read_text() == "yes\n"


def test_host_mode_etc_files_stay_writable():
    """The generated /etc files are bound writable (as Docker's /etc/hosts) over the read-only host /etc."""
    script = "echo 10.0.0.9 extra >> /etc/hosts; cat /etc/hosts"
    result = minirun("run", "--rm", "--add-host", "db:10.77.9.9", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "db" in result.stdout and "extra" in result.stdout


def test_pod_init_is_confined_and_holds_no_host_root(busybox_image, state_dir: Path, clean_slate):
    """Hole 6: in a pod with --share pid, the init (tini) ran unconfined in the host's mount namespace, and
    a member with --cap-add SYS_PTRACE read and wrote the host's / through /proc/1/root. Now the init has a
    root of its own (two static binaries, read-only), Docker's capabilities, no_new_privs and seccomp."""
    assert minirun("pod", "create", "--share", "net,uts,ipc,pid", "shared").returncode == 0
    script = (
        "ls -A /proc/1/root; cat /proc/1/root/etc/os-release 2>&1; touch /proc/1/root/pwned 2>&1; "
        "readlink /proc/1/cwd; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/1/status"
    )
    for options in (("--image", busybox_image), ()):
        result = minirun("run", "--rm", "--pod", "shared", "--cap-add", "SYS_PTRACE", *options, "sh", "-c", script)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[:2] == ["busybox", "tini"], result.stdout
        assert "PRETTY_NAME" not in result.stdout  # the host's /etc/os-release
        assert "Read-only file system" in result.stdout
        fields = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
        assert fields == {
            "CapEff": DOCKER_DEFAULT_CAPS,
            "CapBnd": DOCKER_DEFAULT_CAPS,
            "NoNewPrivs": "1",
            "Seccomp": "2",
        }
    # The init still does its job: members join its PID namespace and it reaps them.
    member = minirun("run", "-d", "--pod", "shared", "sleep", "30").stdout.strip()
    assert member
    wait_running(state_dir)
    assert minirun("rm", "-f", member).returncode == 0


@pytest.mark.parametrize("how", ["mount_setattr", "remount_each"])
def test_read_only_tree_covers_submounts(private_mount: Path, how: str):
    """Both ways of making the host's tree read-only (mount_setattr on kernels >= 5.12, one remount per
    mount point before that) reach submounts and keep each mount's own flags."""
    from minirun.fs import readonly

    sub = private_mount / "sub"
    sub.mkdir()
    pid = os.fork()
    if pid == 0:  # in a mount namespace of its own, so the test's tree is untouched
        code = 1
        try:
            k.unshare(k.CLONE_NEWNS)
            k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
            k.mount("tmpfs", str(sub), "tmpfs", k.MS_NOEXEC, "mode=755")
            if how == "mount_setattr":
                readonly.read_only_tree(str(private_mount))
            else:
                readonly.remount_each_read_only(str(private_mount))
            with open("/proc/self/mountinfo") as f:
                options = {line.split()[4]: line.split()[5].split(",") for line in f}
            refused = 0
            for directory in (private_mount, sub):
                try:
                    (directory / "x").write_text("x")
                except OSError as exc:
                    refused += exc.errno == 30  # EROFS
            assert refused == 2
            assert {"ro", "nodev"} <= set(options[str(private_mount)])
            assert {"ro", "nodev", "noexec"} <= set(options[str(sub)])
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_exec_into_a_pod_never_runs_in_the_hosts_pid_namespace(clean_slate):
    """Review of hole 2: `minirun exec POD` (a pod without --share pid) ran the command in the host's PID
    namespace: its /proc listed every host process (their environ, fds and roots) and CAP_KILL reached
    them. It gets a PID namespace of its own, as a member does."""
    assert minirun("pod", "create", "nopid").returncode == 0
    result = minirun("exec", "nopid", "sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'")
    assert result.returncode == 0, result.stderr
    pid, count = result.stdout.split()
    assert pid == "1" and int(count) <= 3, result.stdout  # sh, ls and grep


def test_a_data_root_made_after_the_container_started_stays_hidden(private_mount: Path, clean_slate):
    """Review of hole 2: a hidden path that did not exist when the container started was not covered, so
    images imported later were visible. Every hidden path is created before it is covered."""
    data = private_mount / "late-data"
    env = {"MINIRUN_DATA_DIR": str(data)}
    started = minirun("run", "-d", "--name", "early", "sleep", "60", env=env)
    assert started.returncode == 0, started.stderr
    (data / "images").mkdir(parents=True, exist_ok=True)
    (data / "images" / "secret").write_text("image data\n")
    seen = minirun("exec", "early", "sh", "-c", f"ls -A {data}; cat {data}/images/secret 2>&1; true", env=env)
    assert seen.returncode == 0, seen.stderr
    assert "image data" not in seen.stdout and "rw" not in seen.stdout.split(), seen.stdout
    assert minirun("rm", "-f", "early", env=env).returncode == 0


@pytest.fixture
def resolv_conf_into_run(private_mount: Path) -> Iterator[None]:
    """A host whose /etc/resolv.conf links into /run, as systemd-resolved sets it up: /etc is replaced by a
    copy (in the test's own mount namespace) with that link, /run gets the stub file."""
    copy = private_mount / "etc"
    subprocess.run(["cp", "-a", "/etc/.", str(copy)], check=True)
    (copy / "resolv.conf").unlink()
    (copy / "resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    stub = Path("/run/systemd/resolve/stub-resolv.conf")
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("nameserver 127.0.0.53\n")
    k.mount(str(copy), "/etc", None, k.MS_BIND)
    try:
        yield
    finally:
        k.umount2("/etc", k.MNT_DETACH)
        stub.unlink()


def test_a_resolv_conf_linked_into_run_is_still_the_generated_one(resolv_conf_into_run):
    """Review of hole 2: /etc/resolv.conf -> ../run/systemd/resolve/stub-resolv.conf led the bind into the
    host's /run, which the container's own /run then covered: it had no resolv.conf at all. The link's
    target is made inside the container's /run and the generated file bound there."""
    result = minirun("run", "--rm", "--add-host", "db:10.77.9.9", "sh", "-c", "cat /etc/resolv.conf /etc/hosts")
    assert result.returncode == 0, result.stderr
    assert "nameserver" in result.stdout and "127.0.0.53" not in result.stdout, result.stdout
    assert "db" in result.stdout


def test_a_terminal_console_is_usable_without_an_image():
    """Review of hole 2: the -t console, bound from the host's devpts after the host's tree went read-only
    and nodev, took those flags and could not be opened."""
    result = minirun("run", "--rm", "-t", "sh", "-c", "echo through-console > /dev/console && echo ok", input="")
    assert result.returncode == 0, result.stderr
    assert "through-console" in result.stdout and "ok" in result.stdout, result.stdout


# Watches for new processes in its PID namespace and tries to read `marker` through their /proc/PID/root
# until `seconds` have passed; prints HIT for each success (a process with the host's tree as its root).
ROOT_RACE = """
import os, sys, time
marker, seconds = sys.argv[1], float(sys.argv[2])
seen = {str(os.getpid())}
print("watching", flush=True)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid not in seen:
            try:
                with open(f"/proc/{pid}/root{marker}") as f:
                    print("HIT", pid, f.read().strip(), flush=True)
            except OSError:
                pass
            if not os.path.exists(f"/proc/{pid}/status"):
                seen.add(pid)
"""


def test_exec_never_shows_the_hosts_root_to_a_ptrace_capable_container(state_dir: Path):
    """Review of hole 2 (runc's CVE-2016-9962 class): `minirun exec` forked its process into the container's
    PID namespace first and entered its mount namespace after, so for a moment a process there had the
    host's tree as its root; a container allowed to ptrace (--cap-add SYS_PTRACE) read and wrote host
    files through /proc/PID/root. The exec'd process is now born in the container's mount namespace."""
    marker = Path(os.environ["MINIRUN_DATA_DIR"]) / f"race-marker-{os.getpid()}"  # hidden from containers
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("host-secret\n")
    try:
        started = minirun(
            "run", "-d", "--name", "racer", "--cap-add", "SYS_PTRACE",
            "python3", "-c", ROOT_RACE, str(marker), "30",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        wait_for(lambda: "watching" in minirun("logs", "racer").stdout, what="the racer watching")
        for _ in range(20):
            assert minirun("exec", "racer", "true").returncode == 0
        assert "HIT" not in minirun("logs", "racer").stdout
    finally:
        minirun("rm", "-f", "racer")
        marker.unlink()


def test_joining_a_shared_pid_namespace_never_shows_the_hosts_root(busybox_image, clean_slate):
    """Review of hole 6: a member of a --share pid pod allowed to ptrace read host files through
    /proc/PID/root of every member being started and every `minirun exec POD` (5 of 6 tries): they were
    forked into the pod's PID namespace first and built their filesystem view after. The launcher now
    builds the view first, and they are born in it."""
    marker = Path(os.environ["MINIRUN_DATA_DIR"]) / f"race-marker-{os.getpid()}"  # hidden from containers
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("host-secret\n")
    try:
        assert minirun("pod", "create", "--share", "net,uts,ipc,pid", "raced").returncode == 0
        started = minirun(
            "run", "-d", "--pod", "raced", "--name", "racer", "--cap-add", "SYS_PTRACE",
            "python3", "-c", ROOT_RACE, str(marker), "60",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        wait_for(lambda: "watching" in minirun("logs", "racer").stdout, what="the racer watching")
        for _ in range(6):
            assert minirun("run", "--rm", "--pod", "raced", "true").returncode == 0
            assert minirun("run", "--rm", "--pod", "raced", "--image", busybox_image, "true").returncode == 0
            assert minirun("exec", "raced", "true").returncode == 0
        assert "HIT" not in minirun("logs", "racer").stdout
    finally:
        marker.unlink()
