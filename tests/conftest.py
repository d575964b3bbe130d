"""Test sandbox: as root, the whole pytest process moves into a throwaway network + mount namespace that
stands in for the host (CNI's originalNS, netavark's HOST_NS_PID). Bridges, veths, nft tables, sysctls and
/run are all per-namespace there, so the machine's real network, firewall and state are never touched."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from minirun.kernel import syscalls as k

REPO = Path(__file__).resolve().parent.parent
_HOST_NETNS_INODE: int | None = None


def _netns_inode(pid: str = "self") -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def pytest_configure(config: pytest.Config) -> None:
    global _HOST_NETNS_INODE
    if os.geteuid() != 0:
        return
    # No DNS query of ours may leave the machine: minirun's resolver answers names it knows and
    # forwards nothing else (tests that check forwarding point it at a resolver in their own namespace).
    os.environ["MINIRUN_DNS_FORWARD"] = "0"
    _HOST_NETNS_INODE = _netns_inode()
    k.unshare(k.CLONE_NEWNET | k.CLONE_NEWNS)
    k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
    # A private /run: minirun's default state root and `ip netns` names live there.
    k.mount("tmpfs", "/run", "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=755")
    os.makedirs("/run/netns", exist_ok=True)
    # Images go to the sandbox's /run too (built once per session), never to the machine's /var/lib/minirun.
    os.environ["MINIRUN_DATA_DIR"] = "/run/minirun-data"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def in_sandbox() -> bool:
    if _HOST_NETNS_INODE is None or _netns_inode() == _HOST_NETNS_INODE:
        return False
    try:
        return _netns_inode() != _netns_inode("1")
    except PermissionError:  # PID 1 hidden from us (we run inside another sandbox): the first check stands
        return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_root = pytest.mark.skip(reason="needs root (runs inside a throwaway network namespace)")
    for item in items:
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(skip_root)


@pytest.fixture(autouse=True)
def _guard_real_host(request: pytest.FixtureRequest) -> None:
    """Refuse to run a root test in the machine's real network namespace."""
    if "root" in request.keywords and not in_sandbox():
        pytest.exit("refusing to run root tests outside the sandbox network namespace", returncode=3)


@pytest.fixture(autouse=True)
def _tmp_path_removed_without_recursion(request: pytest.FixtureRequest):
    """Some tests make trees deeper than Python's recursion limit (5000 levels: issue 12, holes 5 and 9).
    pytest removes old temporary directories with shutil.rmtree, which would then crash a later session
    with RecursionError; so each test's tmp_path goes with minirun's own iterative removal."""
    yield
    path = request.node.funcargs.get("tmp_path")
    if path is not None:
        from minirun.fs import tree

        tree.remove_tree(str(path))
