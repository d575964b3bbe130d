"""minirun.kernel.nsfork against the kernel: where a forked child is born, and where a handed-back netlink
socket lives. Root, in the test sandbox (tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from minirun.kernel import nsfork
from minirun.kernel import syscalls as k
from minirun.net import links
from minirun.net.rtnl import Rtnl

pytestmark = pytest.mark.root


def _inode(path: str) -> int:
    return os.stat(path).st_ino


def _fork_reporting(
    fork: Callable[[], int], report: Callable[[], str], hold: tuple[int, int] | None = None
) -> tuple[int, str]:
    """Fork with `fork`; the child writes report() and, with `hold` (a pipe), stays until its write end closes."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = fork()
    if pid == 0:
        try:
            os.write(write_end, report().encode())
            os.close(write_end)
            if hold is not None:
                os.close(hold[1])
                os.read(hold[0], 1)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        return pid, f.read()


def _reap(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_child_of_a_new_pid_namespace_is_its_pid_1_and_a_joiner_is_not():
    """The first child of a new PID namespace is its PID 1; a child forked into that namespace (a pod member)
    is its second process; the parent's later children are born in its own PID namespace again."""
    hold_in, hold_out = os.pipe2(os.O_CLOEXEC)
    with nsfork.PidNamespaceFork() as pidns:
        first, seen = _fork_reporting(pidns.fork, lambda: str(os.getpid()), hold=(hold_in, hold_out))
    try:
        assert seen == "1"
        target = os.open(f"/proc/{first}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        with nsfork.PidNamespaceFork(target) as pidns:
            joiner, seen = _fork_reporting(pidns.fork, lambda: f"{os.getpid()} {_inode('/proc/self/ns/pid')}")
        os.close(target)
        assert seen == f"2 {_inode(f'/proc/{first}/ns/pid')}"
        assert _reap(joiner) == 0
        assert _inode("/proc/self/ns/pid_for_children") == _inode("/proc/self/ns/pid")
        assert _inode(f"/proc/{first}/ns/pid") != _inode("/proc/self/ns/pid")
    finally:
        os.close(hold_out)
        os.close(hold_in)
        assert _reap(first) == 0


def test_a_failed_pid_namespace_switch_leaves_the_parent_at_home():
    """setns() into something that is not a PID namespace fails before any fork; later children stay ours."""
    not_a_pidns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with pytest.raises(OSError), nsfork.PidNamespaceFork(not_a_pidns) as pidns:
            pidns.fork()
        assert pidns.pid == -1
    finally:
        os.close(not_a_pidns)
    assert _inode("/proc/self/ns/pid_for_children") == _inode("/proc/self/ns/pid")
    with pytest.raises(ValueError):
        nsfork.enter_new_namespaces(k.CLONE_NEWPID)


def test_a_child_forked_in_a_new_mount_namespace_is_born_with_its_view(tmp_path):
    """The view `build` made is the child's from birth and never the caller's after; a failing build
    still takes the caller back to its own mount namespace and working directory."""
    view = tmp_path / "view"
    view.mkdir()
    own_mnt, own_cwd = _inode("/proc/self/ns/mnt"), os.getcwd()

    def build() -> None:
        k.mount("tmpfs", str(view), "tmpfs", 0, "size=64k")
        (view / "inside").write_text("built")

    with nsfork.entering_new_mount_namespace(build):
        os.chdir("/")
        child, seen = _fork_reporting(os.fork, lambda: (view / "inside").read_text())
    assert seen == "built" and _reap(child) == 0
    assert not (view / "inside").exists()
    assert (_inode("/proc/self/ns/mnt"), os.getcwd()) == (own_mnt, own_cwd)

    def failing_build() -> None:
        raise OSError(28, "no space left")

    with pytest.raises(OSError, match="no space left"), nsfork.entering_new_mount_namespace(failing_build):
        pass
    assert (_inode("/proc/self/ns/mnt"), os.getcwd()) == (own_mnt, own_cwd)


@contextlib.contextmanager
def _child_in_new_netns() -> Iterator[tuple[int, Rtnl]]:
    """A child that unshares a network namespace and hands back its netlink socket (what a container's first
    process does), held until the block ends."""
    parent_end, child_end = nsfork.socket_channel()
    pid = os.fork()
    if pid == 0:
        try:
            parent_end.close()
            nsfork.enter_new_namespaces(k.CLONE_NEWNET)
            nsfork.send_netlink(child_end)
            child_end.recv(1)  # until the parent closes its end
        finally:
            os._exit(0)
    child_end.close()
    sock = nsfork.receive_socket(parent_end)
    assert sock is not None
    try:
        with Rtnl(sock) as ipr:
            yield pid, ipr
    finally:
        parent_end.close()
        assert _reap(pid) == 0


def _link_in(netns: str, name: str) -> bool:
    command = ["nsenter", f"--net={netns}", "ip", "-o", "link", "show", name] if netns else ["ip", "link", "show", name]
    return subprocess.run(command, capture_output=True).returncode == 0


def test_a_handed_back_netlink_socket_works_in_the_childs_namespace_only():
    """A bridge made through the handed-back socket (and seen through netlink_in's) exists in the child's
    network namespace, as `ip` there shows, and not in ours."""
    with _child_in_new_netns() as (pid, inside):
        links.ensure_bridge(inside, "nsforkprobe0")
        with Rtnl(nsfork.netlink_in(f"/proc/{pid}/ns/net")) as again:
            assert {link.name for link in links.list_links(again)} == {"lo", "nsforkprobe0"}
        assert _link_in(f"/proc/{pid}/ns/net", "nsforkprobe0")
        assert not _link_in("", "nsforkprobe0")


def test_netlink_in_a_path_that_is_no_network_namespace_is_none(tmp_path):
    """The child cannot join: the parent gets None (rtnl_in's one-line error), no hang, no stray child."""
    before = _children()
    assert nsfork.netlink_in(str(tmp_path / "missing")) is None
    assert nsfork.netlink_in("/proc/self/ns/uts") is None
    assert _children() == before


def _children() -> set[str]:
    with open(f"/proc/self/task/{os.getpid()}/children") as f:
        return set(f.read().split())
