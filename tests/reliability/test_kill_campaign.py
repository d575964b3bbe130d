"""Issue 13: `kill -9` of every long-running verb at random moments, then the next minirun command (its
reconcile) and the ordinary removals: nothing may be left - no veth, address, record, name, pod, netns pin,
mount or directory (the autouse leak check asserts what the kernel and the state root show).

The moments are drawn from a fixed seed, so a failure can be replayed; each kill lands somewhere between
the command's start and, at the latest, its end (a kill after the end is a plain removal).

The image verbs are followed by the same command again: that retry must work, and afterwards the store
holds no staging dir and `image ls` shows no half-made image. `exec` is followed by another exec into the
same container (it must be unharmed), and the command the killed exec started must die with it. Each test
also compares cgroups (directories named minirun* in every hierarchy under /sys/fs/cgroup) and mounts
with what there was when it began: minirun makes no cgroups yet, so that check is armed for when it does."""

from __future__ import annotations

import collections
import io
import json
import os
import random
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import minirun, remove_everything, spawn, wait_for
from tests.integration.test_images import docker_save

pytestmark = pytest.mark.reliability

ROUNDS = 15
IMPORTED = "campaign/import:1"
BUILT = "campaign/build:1"
# In the sandbox's private /run (tests/conftest.py); a fixed path, since the verbs below are fixed commands.
ARCHIVE = "/run/minirun-campaign-import.tar"
EXEC_COMMAND = ("sleep", "1013")  # what the killed exec starts, found in /proc by this argv
VERBS = {
    "run": lambda i: ("run", "--rm", "sleep", "5"),
    "run -d": lambda i: ("run", "-d", "--name", f"d{i}", "sleep", "5"),
    "run --image": lambda i: ("run", "--rm", "--image", "busybox", "sleep", "5"),
    "rm": lambda i: ("rm", "-f", f"victim{i}"),
    "pod create": lambda i: ("pod", "create", f"p{i}"),
    "pod rm": lambda i: ("pod", "rm", "-f", f"victim{i}"),
    "network create": lambda i: ("network", "create", f"n{i}"),
    "network rm": lambda i: ("network", "rm", f"victim{i}"),
    "image import": lambda i: ("image", "import", ARCHIVE),
    "image build": lambda i: ("image", "build", "busybox", "-t", BUILT),
    "exec": lambda i: ("exec", f"host{i}", *EXEC_COMMAND),
}
# What a verb needs to exist before it is killed half-way.
SETUP = {
    "rm": lambda i: ("run", "-d", "--name", f"victim{i}", "sleep", "30"),
    "pod rm": lambda i: ("pod", "create", f"victim{i}"),
    "network rm": lambda i: ("network", "create", f"victim{i}"),
    "exec": lambda i: ("run", "-d", "--name", f"host{i}", "sleep", "300"),
}
# The command after the kill, where it is not `ps -a`: image verbs are retried, exec enters the container again.
NEXT = {
    "image import": VERBS["image import"],
    "image build": VERBS["image build"],
    "exec": lambda i: ("exec", f"host{i}", "true"),
}
# What a round removes after its checks, so that the next round does the whole job again (stores a new image).
CLEANUP = {"image import": lambda i: ("image", "rm", IMPORTED)}


@pytest.mark.parametrize("verb", list(VERBS))
def test_kill_9_anywhere_leaves_nothing(
    verb: str, busybox_image, import_archive, clean_slate, no_new_cgroups_or_mounts
):
    chance = random.Random(f"kill-9 {verb}")
    images_before = stored_images()
    landed = 0
    for i in range(ROUNDS):
        if verb in SETUP:
            assert minirun(*SETUP[verb](i)).returncode == 0
        victim = spawn(*VERBS[verb](i))
        time.sleep(chance.uniform(0, 0.25))  # the moment of the kill, not a wait for a condition
        victim.send_signal(signal.SIGKILL)
        landed += victim.wait(timeout=30) == -signal.SIGKILL
        if verb.startswith("image"):
            listed = minirun("image", "ls")
            assert listed.returncode == 0 and "<none>" not in listed.stdout, listed.stdout + listed.stderr
        # The next command cleans up after the dead one: it must itself work, in one go.
        following = minirun(*NEXT.get(verb, lambda i: ("ps", "-a"))(i))
        assert following.returncode == 0 and "Traceback" not in following.stderr, following.stderr
        if verb.startswith("image"):
            assert staging_leftovers() == []
        if verb == "exec":
            wait_for(lambda: not processes_running(EXEC_COMMAND), timeout=5, what="the exec'd command gone")
        if verb in CLEANUP:
            assert minirun(*CLEANUP[verb](i)).returncode == 0
    for name in (IMPORTED, BUILT):
        minirun("image", "rm", name)
    remove_everything()
    assert minirun("gc").returncode == 0
    assert not [n for n in os.listdir("/run/netns") if n.startswith("minirun-")]
    assert stored_images() == images_before and staging_leftovers() == []
    # The figures of the campaign (shown with -s): every round's next command worked, nothing was left.
    print(f"\nkill -9 {verb}: tried {ROUNDS} (landed while it ran: {landed}), survived {ROUNDS}, leaked 0")


@pytest.mark.parametrize("user", ["0", "1000"])
def test_an_exec_killed_takes_its_command_along(user: str, clean_slate):
    """A killed `minirun exec` left its command running in the container, with nobody to wait for it or
    forward it signals; it now dies with the launcher. The parent-death signal is armed after the switch to
    the container's user (which clears it), so a non-root command goes too."""
    assert minirun("run", "-d", "--name", "host", "--user", user, "sleep", "300").returncode == 0
    launcher = spawn("exec", "host", *EXEC_COMMAND)
    (pid,) = wait_for(lambda: processes_running(EXEC_COMMAND), what="the exec'd command started")
    assert os.stat(f"/proc/{pid}").st_uid == int(user)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(timeout=10)
    wait_for(lambda: not processes_running(EXEC_COMMAND), timeout=5, what="the exec'd command gone")
    assert minirun("exec", "host", "true").returncode == 0  # the container is unharmed


@pytest.mark.parametrize("user", ["0", "1000"])
def test_a_foreground_run_killed_takes_its_container_along(user: str, clean_slate):
    """kill -9 of a foreground `minirun run`: its container dies with it. With --user the switch to the
    user cleared the parent-death signal set early, so the container outlived its launcher until the next
    command cleaned up; it is armed again after the switch."""
    command = ("sleep", "1014")
    launcher = spawn("run", "--rm", "--name", "fg", "--user", user, *command)
    (pid,) = wait_for(lambda: processes_running(command), what="the container started")
    assert os.stat(f"/proc/{pid}").st_uid == int(user)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(timeout=10)
    wait_for(lambda: not processes_running(command), timeout=5, what="the container gone with its launcher")
    assert minirun("run", "--rm", "true").returncode == 0  # and the next command reclaims what it held


# --- what the image verbs need and may leave ------------------------------------------------------------


@pytest.fixture(scope="module")
def import_archive(busybox_image) -> Iterator[str]:
    """A `docker save` tarball of the busybox image's files (2.4 MB: importing it takes about as long as
    the window the kills are drawn from)."""
    shown = json.loads(minirun("image", "inspect", busybox_image).stdout)[0]
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        root = Path(shown["RootFS"]["Path"])
        for path in sorted(root.iterdir()):
            tar.add(path, arcname=path.name)
    Path(ARCHIVE).write_bytes(docker_save([layer.getvalue()], tags=(IMPORTED,)))
    yield ARCHIVE
    os.unlink(ARCHIVE)


def images_dir() -> Path:
    return Path(os.environ["MINIRUN_DATA_DIR"]) / "images"


def stored_images() -> tuple[set[str], set[str]]:
    """The store's image IDs and tag files."""
    root = images_dir()
    ids = set(os.listdir(root / "by-id")) if (root / "by-id").is_dir() else set()
    tags = {str(p.relative_to(root / "tags")) for p in (root / "tags").rglob("*") if p.is_file()}
    return ids, tags


def staging_leftovers() -> list[str]:
    """Staging dirs (a build's or import's work, an image being deleted) and temporary tag files."""
    root = images_dir()
    found = [p.name for p in root.iterdir() if p.name.startswith(".tmp-")] if root.is_dir() else []
    return found + [str(p) for p in (root / "tags").rglob(".*.tmp")]


# --- processes, cgroups and mounts ----------------------------------------------------------------------


def processes_running(argv: tuple[str, ...]) -> list[int]:
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == wanted:
                    found.append(int(pid))
        except OSError:
            continue  # gone meanwhile
    return found


def cgroup_dirs() -> set[str]:
    """Every directory named minirun* in every cgroup hierarchy mounted under /sys/fs/cgroup: each v1
    controller, named ones (systemd) and cgroup2 (`unified` beside them, or /sys/fs/cgroup itself)."""
    with open("/proc/self/mounts") as f:
        roots = [
            fields[1]
            for fields in map(str.split, f)
            if fields[2] in ("cgroup", "cgroup2") and (fields[1] + "/").startswith("/sys/fs/cgroup/")
        ]
    found = set()
    for root in roots:
        for directory, subdirs, _files in os.walk(root):
            found.update(os.path.join(directory, name) for name in subdirs if name.startswith("minirun"))
    return found


def mounts() -> collections.Counter[tuple[str, str]]:
    """(mount point, filesystem type) of every mount this process sees, counted (mounts stack)."""
    with open("/proc/self/mountinfo") as f:
        # fields: id parent major:minor root mount-point options [optional...] - fstype source super-options
        return collections.Counter((fields[4], fields[fields.index("-") + 1]) for fields in map(str.split, f))


@pytest.fixture
def no_new_cgroups_or_mounts() -> Iterator[None]:
    cgroups_before, mounts_before = cgroup_dirs(), mounts()
    yield

    def new() -> tuple[set[str], collections.Counter]:
        return cgroup_dirs() - cgroups_before, mounts() - mounts_before

    try:  # a cgroup can be removed only once its last process has gone
        wait_for(lambda: not any(new()), timeout=3, what="no new cgroups or mounts")
    except AssertionError:
        cgroups, extra_mounts = new()
        raise AssertionError(f"leaked: cgroups={sorted(cgroups)} mounts={sorted(extra_mounts)}") from None
