"""Fixtures for root tests: a fresh state root per test, the `minirun` CLI, an "outside world" namespace,
and a leak check after every test that asserts on what the kernel and the state root show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from minirun.net import ipam

MINIRUN = str(Path(sys.executable).parent / "minirun")
OUTSIDE_NS = "outside"
OUTSIDE_HOST_IP = "198.51.100.1"  # TEST-NET-2: the test host's "uplink" address
OUTSIDE_PEER_IP = "198.51.100.2"  # the outside world's only host


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.root)


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state"
    monkeypatch.setenv("MINIRUN_STATE_DIR", str(path))
    for var in (
        "MINIRUN_SUBNET",
        "MINIRUN_NFT",
        "MINIRUN_TEST_FAIL_AFTER_STEP",
        "MINIRUN_DEBUG",
        "MINIRUN_DNS_UPSTREAM",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MINIRUN_DNS_FORWARD", "0")
    return path


def minirun(
    *args: str, input: str | None = None, env: dict | None = None, timeout: float = 60, **kwargs
) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [MINIRUN, *args], input=input, capture_output=True, text=True, env=full_env, timeout=timeout, **kwargs
    )


def spawn(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [MINIRUN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, **(env or {})),
        **kwargs,
    )


def records(state: Path) -> list[dict]:
    directory = state / "containers"
    if not directory.is_dir():
        return []
    found = []
    for path in directory.glob("*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError):
            continue
    return found


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def wait_running(state: Path, count: int = 1, timeout: float = 10.0) -> list[dict]:
    return wait_for(
        lambda: (
            [r for r in records(state) if r.get("status") == "running"][:count]
            if len([r for r in records(state) if r.get("status") == "running"]) >= count
            else None
        ),
        timeout,
        what=f"{count} running container(s)",
    )


def process_name(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def host_links() -> dict[str, dict]:
    with IPRoute() as ipr:
        return {
            link.get_attr("IFLA_IFNAME"): {
                "index": link["index"],
                "kind": (
                    link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND")
                    if link.get_attr("IFLA_LINKINFO")
                    else None
                ),
                "mtu": link.get_attr("IFLA_MTU"),
                "up": bool(link["flags"] & 1),
                "master": link.get_attr("IFLA_MASTER"),
            }
            for link in ipr.get_links()
        }


def nft_ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout


def delete_link(name: str) -> None:
    subprocess.run(["ip", "link", "delete", name], capture_output=True)


def ipam_reservations(state: Path) -> list[str]:
    """Every address reservation as NETWORK/ADDRESS (IPAM reads its own files: tests/unit/test_ipam_format.py)."""
    held = ipam.all_reservations(str(state / "ipam"))
    return [f"{network}/{address}" for network, addresses in held.items() for address in addresses]


@pytest.fixture(autouse=True)
def leak_check(state_dir: Path):
    """After every test: no veth, no address record, no container record, no name claim is left."""
    yield

    def leftovers():
        links = [name for name in host_links() if name.startswith("veth")]
        claims = list((state_dir / "names").glob("*")) if (state_dir / "names").is_dir() else []
        pods = list((state_dir / "pods").glob("*")) if (state_dir / "pods").is_dir() else []
        netns = [n for n in os.listdir("/run/netns") if n.startswith("minirun-")] if os.path.isdir("/run/netns") else []
        containers = state_dir / "containers"
        pods += [p for p in containers.iterdir() if p.is_dir()] if containers.is_dir() else []  # upper dirs, /etc
        # What containers and pods write (upper dirs, /etc files, logs) lives on the data root
        writable = Path(os.environ.get("MINIRUN_DATA_DIR", "/var/lib/minirun")) / "rw"
        pods += [p for p in writable.glob("*/*/*")] if writable.is_dir() else []
        with open("/proc/self/mounts") as f:
            pins = [line.split()[1] for line in f if str(state_dir) in line or "/run/netns/minirun-" in line]
        return links, ipam_reservations(state_dir), records(state_dir), claims, pods, netns, pins

    try:  # the kernel deletes a dead netns (and its veth) asynchronously
        wait_for(lambda: not any(leftovers()), timeout=3, what="no leftovers")
    except AssertionError:
        links, reservations, recs, claims, pods, netns, pins = leftovers()
        raise AssertionError(
            f"leaked: links={links} reservations={reservations} records={[r['id'] for r in recs]} names={claims} "
            f"pods={pods} netns={netns} mounts={pins}"
        ) from None


@pytest.fixture
def fresh_bridge():
    """Start without minirun0 (and leave none behind), for tests about how it is created."""
    delete_link("minirun0")
    yield
    delete_link("minirun0")


@pytest.fixture
def outside():
    """An "internet" namespace reachable from the test host: uplink0 198.51.100.1/24 <-> eth0 198.51.100.2/24."""
    subprocess.run(["ip", "netns", "add", OUTSIDE_NS], check=True)
    cmds = [
        ["ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "eth0", "netns", OUTSIDE_NS],
        ["ip", "addr", "add", f"{OUTSIDE_HOST_IP}/24", "dev", "uplink0"],
        ["ip", "link", "set", "uplink0", "up"],
        ["ip", "-n", OUTSIDE_NS, "addr", "add", f"{OUTSIDE_PEER_IP}/24", "dev", "eth0"],
        ["ip", "-n", OUTSIDE_NS, "link", "set", "eth0", "up"],
        ["ip", "-n", OUTSIDE_NS, "link", "set", "lo", "up"],
    ]
    try:
        for cmd in cmds:
            subprocess.run(cmd, check=True)
        yield OUTSIDE_NS
    finally:
        subprocess.run(["ip", "netns", "delete", OUTSIDE_NS], capture_output=True)
        delete_link("uplink0")


LISTENER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(8)
s.settimeout(float(sys.argv[2]))
print("listening", flush=True)
conn, peer = s.accept()
print(peer[0], conn.recv(100).decode(), flush=True)
conn.sendall(b"pong")
conn.close()
"""

CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
c.sendall(b"ping")
print(c.recv(100).decode())
"""

PYTHON = "/usr/bin/python3"


def listen_in_netns(netns: str, port: int, timeout: float = 10) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, PYTHON, "-c", LISTENER, str(port), str(timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "listening"
    return proc


@pytest.fixture
def docker_forward_drop():
    """What Docker does to a host: filter FORWARD with policy drop, jumping first to an empty DOCKER-USER."""
    subprocess.run(
        ["nft", "-f", "-"],
        check=True,
        text=True,
        input="""
table ip filter {
  chain DOCKER-USER { }
  chain FORWARD { type filter hook forward priority filter; policy drop; jump DOCKER-USER; }
}
""",
    )
    yield
    subprocess.run(["nft", "delete", "table", "ip", "filter"], capture_output=True)


def remove_everything() -> None:
    """What a test made through minirun: containers, then pods, then user networks (in that order, since
    each of those refuses removal while the next depends on it)."""
    ids = minirun("ps", "-a", "-q").stdout.split()
    if ids:
        minirun("rm", "-f", *ids)
    for row in minirun("pod", "ls", "--format", "json").stdout.splitlines():
        minirun("pod", "rm", "-f", json.loads(row)["Name"])
    for row in minirun("network", "ls", "--format", "json").stdout.splitlines():
        if json.loads(row)["Name"] != "minirun":
            minirun("network", "rm", json.loads(row)["Name"])


@pytest.fixture
def clean_slate():
    yield
    remove_everything()


@pytest.fixture(scope="session")
def busybox_image() -> str:
    """The busybox image, built once per session from images/busybox through the CLI; returns its name."""
    built = minirun("image", "build", "busybox")
    assert built.returncode == 0, built.stderr
    return "busybox"


def process_states(ref: str) -> list[tuple[str, str]]:
    """(command name, state letter) of every process in a container's or pod's PID namespace, as
    /proc/PID/stat inside shows them (a zombie keeps its name, with state Z)."""
    stats = minirun("exec", ref, "sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null").stdout
    return [(line.split("(", 1)[1].rsplit(")", 1)[0], line.rsplit(")", 1)[1].split()[0]) for line in stats.splitlines()]
