"""fs.tree: removal and walks of trees a hostile container wrote (issue 12, hole 5).

Hole 5: a uid-1000 process creating a directory tree 1100 levels deep made cleanup raise RecursionError,
and from then on every minirun command failed. The removal must be iterative and descriptor-relative,
never follow a symlink, get through directories chmod'ed 000, and report (not raise on) what it cannot
delete, such as an immutable file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest

from minirun.fs import tree, tree_walk

DEPTH = 5000


def make_deep(root: Path, depth: int = DEPTH, name: str = "d") -> None:
    """mkdirat/openat one level at a time: a path this deep is far beyond PATH_MAX."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.close(leaf)
    finally:
        os.close(fd)


def test_a_5000_level_tree_is_removed(tmp_path: Path):
    """Hole 5: 5000 levels (past the recursion limit and PATH_MAX) go without a RecursionError."""
    root = tmp_path / "deep"
    root.mkdir()
    make_deep(root)
    result = tree.remove_tree(str(root))
    assert result.complete, result.leftovers
    assert not root.exists()


def test_symlinks_are_removed_never_followed(tmp_path: Path):
    """Hole 5: a symlink to a directory outside the tree is unlinked; what it points to survives."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "precious").write_text("keep me")
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "a" / "link").symlink_to(outside)
    (root / "a" / "file-link").symlink_to(outside / "sub" / "precious")
    (root / "dangling").symlink_to("/nonexistent/x")
    assert tree.remove_tree(str(root)).complete
    assert not os.path.lexists(root)
    assert (outside / "sub" / "precious").read_text() == "keep me"
    # The root itself a symlink: only the link goes.
    link = tmp_path / "root-link"
    link.symlink_to(outside)
    assert tree.remove_tree(str(link)).complete
    assert not os.path.lexists(link) and (outside / "sub" / "precious").exists()


def test_missing_tree_is_success(tmp_path: Path):
    assert tree.remove_tree(str(tmp_path / "never-was")).complete
    assert tree.remove_tree(str(tmp_path / "no-parent" / "never-was")).complete


def test_many_files_and_wide_levels(tmp_path: Path):
    """Hole 5: more names than one read batch, in several directories, with files, FIFOs and subdirs mixed."""
    root = tmp_path / "wide"
    for sub in ("x", "x/y", "z"):
        (root / sub).mkdir(parents=True)
        for i in range(3000):
            (root / sub / f"f{i}").touch()
        os.mkfifo(root / sub / "fifo")
    assert tree.remove_tree(str(root)).complete
    assert not root.exists()


def chmod_000_tree(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    (root / "a" / "g").write_text("x")
    os.chmod(root / "a" / "b", 0)
    os.chmod(root / "a", 0)


def test_chmod_000_directories_as_root(tmp_path: Path):
    """Hole 5: directories the container chmod'ed 000 do not stop the removal."""
    root = tmp_path / "locked"
    chmod_000_tree(root)
    assert tree.remove_tree(str(root)).complete
    assert not root.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become uid 1000")
def test_chmod_000_directories_without_dac_override():
    """Hole 5: even a caller without CAP_DAC_OVERRIDE (the owner) gets through chmod 000 directories,
    by giving them 0700 first."""
    base = Path(tempfile.mkdtemp(prefix="minirun-tree-"))  # /tmp itself: uid 1000 can reach it
    os.chmod(base, 0o777)
    try:
        removed_as_uid_1000(base)
    finally:
        assert tree.remove_tree(str(base)).complete


def removed_as_uid_1000(base: Path) -> None:
    root = base / "locked"
    root.mkdir()
    chmod_000_tree(root)
    for path in (root, root / "a", root / "a" / "b", root / "a" / "g"):
        os.chown(path, 1000, 1000)
    os.chmod(root / "a", 0o700)  # chown cleared nothing, but b/f must be chowned through a readable a/
    os.chmod(root / "a" / "b", 0o700)
    os.chown(root / "a" / "b" / "f", 1000, 1000)
    os.chmod(root / "a" / "b", 0)
    os.chmod(root / "a", 0)
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(1000, 1000, 1000)
            os.setresuid(1000, 1000, 1000)
            result = tree.remove_tree(str(root))
            print(result, file=sys.stderr)
            os._exit(0 if result.complete else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not root.exists()


def chattr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["chattr", *args], capture_output=True, text=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="chattr +i needs CAP_LINUX_IMMUTABLE")
def test_immutable_entry_is_reported_not_fatal(tmp_path: Path):
    """Hole 5: an immutable file cannot be removed even by root: it is reported (path and fix) and
    everything else still goes."""
    root = tmp_path / "immutable"
    (root / "keep" / "deeper").mkdir(parents=True)
    (root / "other").mkdir()
    for i in range(50):
        (root / "other" / f"f{i}").touch()
    stuck = root / "keep" / "deeper" / "stuck"
    stuck.write_text("x")
    (root / "keep" / "deeper" / "loose").write_text("x")
    made = chattr("+i", str(stuck))
    if made.returncode != 0:
        pytest.skip(f"this filesystem refuses chattr +i: {made.stderr.strip()}")
    try:
        result = tree.remove_tree(str(root))
        assert result.total == 1
        assert result.leftovers[0].path == str(stuck)
        assert "immutable" in result.leftovers[0].reason and "chattr -i" in result.leftovers[0].fix
        assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == ["keep", "keep/deeper", "keep/deeper/stuck"]
        with pytest.raises(tree.TreeNotRemoved, match="immutable"):
            result.check()
    finally:
        chattr("-i", str(stuck))
    assert tree.remove_tree(str(root)).complete
    assert not root.exists()


def test_walk_is_sorted_preorder_and_deep(tmp_path: Path):
    """Hole 5: reading back an image tree (its digest) walks 5000 levels without recursion."""
    root = tmp_path / "walked"
    (root / "b").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "a" / "z").touch()
    (root / "a" / "link").symlink_to("/")
    (root / "c").touch()
    make_deep(root / "b", 3)
    assert [e.path for e in tree_walk.walk(str(root))] == [
        b"/a",
        b"/a/link",
        b"/a/z",
        b"/b",
        b"/b/d",
        b"/b/d/d",
        b"/b/d/d/d",
        b"/b/d/d/d/leaf",
        b"/c",
    ]
    deep = tmp_path / "deep"
    deep.mkdir()
    make_deep(deep)
    assert sum(1 for _ in tree_walk.walk(str(deep))) == DEPTH + 1
    assert tree.remove_tree(str(deep)).complete
