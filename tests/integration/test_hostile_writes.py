"""Issue 12, hole 5: anything a container writes must not break minirun.

A uid-1000 process creating a directory tree 1100 levels deep in its /tmp made cleanup raise
RecursionError, and from then on every minirun command failed (`ps`, `run`, `gc`, `image ls`) until
someone ran `rm -rf`. Here containers write a 5000-level tree, 100k files and directories chmod'ed 000;
after they go, nothing of them is left and every command still works. A cleanup that cannot finish (an
immutable file) is reported in one line and never blocks other commands.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

from minirun.fs import tree
from tests.integration.conftest import minirun, records, wait_for

DEPTH = 5000
FILES = 100_000

# busybox ash's `cd` fails past PATH_MAX, so the deep tree grows from the top: wrap the chain in a new
# directory each round (mkdir w; mv d w/d; mv w d), every path staying short.
DEEP_TREE = (
    f"mkdir d && i=1 && while [ $i -lt {DEPTH} ]; do mkdir w && mv d w/d && mv w d || exit 1; i=$((i+1)); done"
    " && echo depth=$i"
)
MANY_FILES = (
    f"mkdir many && i=0 && while [ $i -lt {FILES} ]; do : > many/f$i || exit 1; i=$((i+1)); done && echo files=$i"
)
LOCKED = "mkdir -p locked/sub && : > locked/sub/f && chmod 000 locked/sub locked && echo locked"
HOSTILE = f"cd $WHERE && {DEEP_TREE} && {MANY_FILES} && {LOCKED}"


def directories_named(container_id: str, *roots: Path) -> list[Path]:
    """Anything named after the container under the state and data roots (wherever its layer lives)."""
    found = []
    for root in roots:
        for directory, dirs, files in os.walk(root):
            if Path(directory).relative_to(root).parts.__len__() >= 3:
                dirs.clear()
            found += [Path(directory) / n for n in [*dirs, *files] if container_id in n]
    return found


def commands_still_work(busybox_image: str) -> None:
    for args in (("ps", "-a"), ("gc",), ("image", "ls")):
        result = minirun(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
    ran = minirun("run", "--rm", "--image", busybox_image, "echo", "still-running")
    assert ran.returncode == 0 and ran.stdout.strip() == "still-running", ran.stderr


def check_hostile_output(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert f"depth={DEPTH}" in result.stdout and f"files={FILES}" in result.stdout and "locked" in result.stdout


@pytest.mark.parametrize("mode", ["--rm", "-d then rm"])
def test_image_container_deep_wide_and_locked_trees_are_removed(busybox_image, state_dir: Path, mode: str):
    """Hole 5: a uid-1000 `--image` container writes a 5000-level tree, 100k files and a chmod 000
    directory into its overlay; `--rm` (or `rm` once the detached container exited) removes all of it, and
    ps, gc, image ls and run keep working."""
    command = ["--user", "1000", "-e", "WHERE=/tmp", "--image", busybox_image, "sh", "-c", HOSTILE]
    container_id = None
    if mode == "--rm":
        check_hostile_output(minirun("run", "--rm", *command, timeout=300))
    else:
        name = f"hostile-{uuid.uuid4().hex[:8]}"
        started = minirun("run", "-d", "--name", name, *command)
        assert started.returncode == 0, started.stderr
        container_id = started.stdout.strip()
        wait_for(lambda: [r.get("status") for r in records(state_dir)] == ["exited"], timeout=300, what="exit")
        assert records(state_dir)[0].get("exit_code") == 0
        check_hostile_output(minirun("logs", name))
        removed = minirun("rm", name, timeout=120)
        assert removed.returncode == 0 and removed.stderr == "", removed.stderr
    assert records(state_dir) == []
    containers = state_dir / "containers"
    assert not containers.is_dir() or not any(p.is_dir() for p in containers.iterdir())
    if container_id:
        assert directories_named(container_id, state_dir, Path(os.environ["MINIRUN_DATA_DIR"])) == []
    commands_still_work(busybox_image)


def test_host_filesystem_container_deep_tree_does_not_break_minirun(busybox_image, state_dir: Path):
    """Hole 5: a uid-1000 container without --image writes the same trees where it can (its /tmp); minirun
    commands keep working, and minirun's own directory for it is gone."""
    where = f"/tmp/minirun-hostile-{uuid.uuid4().hex[:8]}"
    try:
        result = minirun(
            "run", "--rm", "--user", "1000", "-e", f"WHERE={where}", "sh", "-c", f"mkdir {where} && {HOSTILE}",
            timeout=300,
        )  # fmt: skip
        check_hostile_output(result)
        assert records(state_dir) == []
        commands_still_work(busybox_image)
    finally:
        # Where the container's /tmp was the host's, the trees are the host's now: the same removal clears them.
        assert tree.remove_tree(where).complete


def orphan_dir(state_dir: Path) -> Path:
    """A container directory whose record is gone: what a crash between the two removals leaves."""
    directory = state_dir / "containers" / uuid.uuid4().hex
    directory.mkdir(parents=True)
    return directory


def make_deep(root: Path, depth: int) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def test_reconcile_removes_deep_orphans_and_reports_what_it_cannot(busybox_image, state_dir: Path):
    """Hole 5: the cleanup every command runs first removes a 5000-level orphan directory; one it cannot
    finish (an immutable file) is one warning line naming the path and the fix from the commands that look at
    everything (ps, gc), and run and image ls still work; once the flag is cleared, gc removes it."""
    minirun("ps")  # the state root exists
    deep = orphan_dir(state_dir)
    make_deep(deep, DEPTH)
    listed = minirun("ps")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert not deep.exists()

    stuck_dir = orphan_dir(state_dir)
    make_deep(stuck_dir, 50)
    stuck = stuck_dir / "upper" / "stuck"
    stuck.parent.mkdir()
    stuck.write_text("x")
    made = subprocess.run(["chattr", "+i", str(stuck)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"this filesystem refuses chattr +i: {made.stderr.strip()}")
    try:
        for args in (("ps", "-a"), ("gc",)):  # the commands that look at everything (runtime/owners.py)
            result = minirun(*args)
            assert result.returncode == 0, (args, result.stderr)
            (line,) = result.stderr.splitlines()
            assert line.startswith("minirun: warning: cannot remove ") and str(stuck) in line, line
            assert "immutable" in line and f"chattr -i -a {stuck}" in line, line
        # No minirun process died, so the others skip the full look: they work and say nothing about it.
        images = minirun("image", "ls")
        assert images.returncode == 0 and images.stderr == "", images.stderr
        ran = minirun("run", "--rm", "--image", busybox_image, "echo", "still-running")
        assert ran.returncode == 0 and ran.stdout.strip() == "still-running", ran.stderr
        assert not (stuck_dir / "d").exists() and stuck.exists()  # the rest went, the immutable file stayed
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    cleaned = minirun("gc")
    assert cleaned.returncode == 0 and cleaned.stderr == "", cleaned.stderr
    assert f"removed directory of container {stuck_dir.name}" in cleaned.stdout
    assert not stuck_dir.exists()


def test_a_leftover_the_container_named_cannot_forge_output_or_commands(state_dir: Path):
    """Review of hole 5: an immutable file named "a<newline>minirun: container removed<newline>b; rm -rf ~ #"
    made every command print a forged "minirun: container removed" line, and the suggested fix, pasted into a
    shell, ran `rm -rf ~`. The path is shown escaped and shell-quoted, in one line."""
    minirun("ps")
    stuck_dir = orphan_dir(state_dir)
    name = "a\nminirun: container removed\nb; rm -rf ~ #"
    stuck = stuck_dir / "upper" / name
    stuck.parent.mkdir(parents=True)
    stuck.write_text("x")
    made = subprocess.run(["chattr", "+i", str(stuck)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"this filesystem refuses chattr +i: {made.stderr.strip()}")
    try:
        result = minirun("ps", "-a")
        assert result.returncode == 0
        (line,) = result.stderr.splitlines()
        assert "\\x0aminirun: container removed\\x0ab; rm -rf ~ #'" in line, line
        fix = line.split("clear that with: ", 1)[1].split("; then run:", 1)[0]
        assert shlex.split(fix)[:3] == ["chattr", "-i", "-a"] and len(shlex.split(fix)) == 4, fix
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert minirun("gc").returncode == 0 and not stuck_dir.exists()


def test_exec_user_reads_no_endless_passwd(busybox_image, clean_slate):
    """Review of holes 5 and 8: `exec -u NAME` read the container's /etc/passwd whole; one linked to
    /dev/zero grew minirun to 1.5 GB. Account files must be regular files of at most 1 MiB."""
    started = minirun("run", "-d", "--name", "liar", "--image", busybox_image, "sh", "-c",
                      "ln -sf /dev/zero /etc/passwd && echo ready && exec sleep 60")  # fmt: skip
    assert started.returncode == 0, started.stderr
    wait_for(lambda: "ready" in minirun("logs", "liar").stdout, what="the link made")
    result = minirun("exec", "-u", "nobody", "liar", "id", timeout=20)
    assert result.returncode == 125 and "/etc/passwd is not a regular file" in result.stderr, result.stderr
