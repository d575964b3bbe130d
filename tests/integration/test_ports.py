"""Published ports: reachable where Docker users expect, and nowhere else (moby#45610)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess

import pytest

from tests.integration.conftest import OUTSIDE_HOST_IP, PYTHON, minirun, nft_ruleset, wait_for

SERVER = """
import socket, sys, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, peer = s.accept(); c.sendall(f"tcp {port} from {peer[0]}".encode()); c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(100); s.sendto(b"udp " + data + f" from {peer[0]}".encode(), peer)
for port in map(int, sys.argv[1:]):
    threading.Thread(target=udp if port == 53 else tcp, args=(port,)).start()
print("serving", flush=True)
"""

TCP = (
    "import socket,sys; print(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).recv(100).decode())"
)


def fetch(host: str, port: int, netns: str | None = None, container: str | None = None) -> str:
    """What a TCP client gets from host:port - run on the host, in a netns, or in a container."""
    if container:
        result = minirun("exec", container, PYTHON, "-c", TCP, host, str(port))
    else:
        prefix = ["ip", "netns", "exec", netns] if netns else []
        result = subprocess.run([*prefix, PYTHON, "-c", TCP, host, str(port)], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else f"failed: {result.stderr.strip().splitlines()[-1]}"


def fetch_once_up(host: str, port: int, netns: str | None = None, timeout: float = 10) -> str:
    """fetch() until something answers (the server starts listening after `run -d` returns), instead of a
    bare sleep. Returns that answer, or the last failure on timeout, for the caller to assert on."""
    answers: list[str] = []

    def answered() -> bool:
        answers.append(fetch(host, port, netns=netns))
        return not answers[-1].startswith("failed: ")

    with contextlib.suppress(AssertionError):  # timed out: the caller's assert shows the last failure
        wait_for(answered, timeout=timeout, what=f"an answer from {host}:{port}")
    return answers[-1]


@pytest.fixture
def web(outside):
    result = minirun(
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:8081:80",
        "-p",
        f"{OUTSIDE_HOST_IP}:8082:80",
        "-p",
        "5353:53/udp",
        PYTHON,
        "-c",
        SERVER,
        "80",
        "53",
    )
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    wait_for(lambda: "serving" in minirun("logs", "web").stdout, what="web serving")
    yield container_id
    minirun("rm", "-f", "web", "other")


def test_reachable_from_outside_the_host_and_other_containers(web, outside):
    address = json.loads(minirun("inspect", "web").stdout)[0]["NetworkSettings"]["IPAddress"]
    assert fetch(OUTSIDE_HOST_IP, 8080, netns=outside) == "tcp 80 from 198.51.100.2"  # another machine
    assert fetch(OUTSIDE_HOST_IP, 8080) == f"tcp 80 from {OUTSIDE_HOST_IP}"  # the host, by its address
    assert fetch("127.0.0.1", 8080) == "tcp 80 from 10.77.0.1"  # the host, by localhost
    assert minirun("run", "-d", "--name", "other", "sleep", "30").returncode == 0
    assert fetch(OUTSIDE_HOST_IP, 8080, container="other") == "tcp 80 from 10.77.0.1"  # hairpin
    assert fetch(OUTSIDE_HOST_IP, 8080, container="web") == "tcp 80 from 10.77.0.1"  # back to itself
    other = json.loads(minirun("inspect", "other").stdout)[0]["NetworkSettings"]["IPAddress"]
    assert fetch(address, 80, container="other") == f"tcp 80 from {other}"  # direct, no NAT on the bridge


def test_host_ip_restricts_where_it_listens(web, outside):
    assert fetch(OUTSIDE_HOST_IP, 8082, netns=outside) == "tcp 80 from 198.51.100.2"
    assert fetch("127.0.0.1", 8082).startswith("failed")  # only on 198.51.100.1
    assert fetch("127.0.0.1", 8081) == "tcp 80 from 10.77.0.1"  # the 127.0.0.1 publish, from the host
    assert fetch(OUTSIDE_HOST_IP, 8081, netns=outside).startswith("failed")  # ... and not from outside
    assert fetch(OUTSIDE_HOST_IP, 8081).startswith("failed")  # nor via the host's other addresses


def test_udp(web, outside):
    reply = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            outside,
            PYTHON,
            "-c",
            "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); "
            f"s.sendto(b'ping', ('{OUTSIDE_HOST_IP}', 5353)); print(s.recvfrom(100)[0].decode())",
        ],
        capture_output=True,
        text=True,
    )
    assert reply.stdout.strip() == "udp ping from 198.51.100.2", reply.stderr


def test_loopback_publish_is_not_reachable_from_a_neighbour(web, outside):
    """moby#45610: a neighbour sends to 127.0.0.1 with the host as next hop; it must never reach the port."""
    for cmd in (
        ["ip", "-n", outside, "rule", "add", "pref", "5", "to", "127.0.0.0/8", "lookup", "100"],
        ["ip", "-n", outside, "rule", "del", "pref", "0"],
        ["ip", "-n", outside, "rule", "add", "pref", "10", "lookup", "local"],
        ["ip", "-n", outside, "route", "add", "127.0.0.0/8", "via", OUTSIDE_HOST_IP, "dev", "eth0", "table", "100"],
        ["ip", "netns", "exec", outside, "sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"],
        # the host side accepting 127/8 from the wire is the trap's precondition; make it true
        ["sysctl", "-qw", "net.ipv4.conf.uplink0.route_localnet=1"],
    ):
        subprocess.run(cmd, check=True)
    for port in (8080, 8081):
        assert "timed out" in fetch("127.0.0.1", port, netns=outside)  # dropped, not refused, not served
    # negative control: without minirun's guard the neighbour's packet does reach the host's stack
    subprocess.run(["nft", "flush", "chain", "inet", "minirun", "localnet-guard"], check=True)
    assert "refused" in fetch("127.0.0.1", 8081, netns=outside)


def test_conflicts_are_refused_and_create_nothing(web, state_dir):
    taken = minirun("run", "--name", "second", "-p", "8080:90", "true")
    assert taken.returncode == 125
    assert "host port 8080/tcp is already published by container web (0.0.0.0:8080->80/tcp)" in taken.stderr
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 8090))
        listener.listen(1)
        busy = minirun("run", "-p", "8090:80", "true")
        assert busy.returncode == 125 and "in use by a process on the host" in busy.stderr
    assert len(minirun("ps", "-a", "-q").stdout.split()) == 1
    names = [json.loads(line)["Names"] for line in minirun("ps", "-a", "--format", "json").stdout.splitlines()]
    assert names == ["web"]


def test_rules_go_with_the_container(web):
    assert f"owner={web}" in nft_ruleset()
    assert minirun("port", "web").stdout.splitlines() == [
        "80/tcp -> 0.0.0.0:8080",
        "80/tcp -> 127.0.0.1:8081",
        f"80/tcp -> {OUTSIDE_HOST_IP}:8082",
        "53/udp -> 0.0.0.0:5353",
    ]
    row = json.loads(minirun("ps", "--format", "json").stdout.splitlines()[0])
    assert row["Ports"].startswith("0.0.0.0:8080->80/tcp, 127.0.0.1:8081->80/tcp")
    ports = json.loads(minirun("inspect", "web").stdout)[0]["NetworkSettings"]["Ports"]
    assert ports["80/tcp"][0] == {"HostIp": "0.0.0.0", "HostPort": "8080"}
    assert minirun("rm", "-f", "web").returncode == 0
    assert f"owner={web}" not in nft_ruleset()
    foreground = minirun("run", "-p", "9090:80", "true")
    assert foreground.returncode == 0 and "dport 9090" not in nft_ruleset()


def test_pod_ports(outside):
    assert minirun("pod", "create", "-p", "8088:80", "pp").returncode == 0
    try:
        server = minirun("run", "-d", "--pod", "pp", PYTHON, "-c", SERVER, "80")
        assert server.returncode == 0
        assert fetch_once_up(OUTSIDE_HOST_IP, 8088, netns=outside) == "tcp 80 from 198.51.100.2"
        member = minirun("run", "--pod", "pp", "-p", "9000:80", "true")
        assert member.returncode == 125 and "ports belong to the pod" in member.stderr
    finally:
        minirun("pod", "rm", "-f", "pp")
    assert "dport 8088" not in nft_ruleset()


@pytest.mark.parametrize("spec", ["80", "a:80", "0:80", "8080:70000", "1.2.3:8080:80", "8080:80/sctp"])
def test_bad_port_specs(spec):
    result = minirun("run", "-p", spec, "true")
    assert result.returncode == 125 and "minirun: error: " in result.stderr and len(result.stderr.splitlines()) == 1


def test_published_port_under_docker_forward_drop(outside, docker_forward_drop):
    try:
        assert minirun("run", "-d", "--name", "behind", "-p", "8083:80", PYTHON, "-c", SERVER, "80").returncode == 0
        assert fetch_once_up(OUTSIDE_HOST_IP, 8083, netns=outside) == "tcp 80 from 198.51.100.2"
    finally:
        minirun("rm", "-f", "behind")


def test_a_flushed_guard_comes_back_with_the_next_publish(web):
    subprocess.run(["nft", "flush", "chain", "inet", "minirun", "localnet-guard"], check=True)
    assert minirun("run", "-d", "--name", "other", "-p", "8099:80", "sleep", "30").returncode == 0
    guard = subprocess.run(
        ["nft", "list", "chain", "inet", "minirun", "localnet-guard"], capture_output=True, text=True
    ).stdout
    assert 'iifname != "lo" ip daddr 127.0.0.0/8 drop comment "minirun localnet-guard"' in guard
    assert nft_ruleset().count('comment "minirun ports network=minirun0"') == 2
