"""Names on user networks, answered by minirun's resolver on the network's gateway (and only by it: no
query in these tests can leave the machine - unknown names get NXDOMAIN, nothing is forwarded)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.integration.conftest import PYTHON, minirun


@pytest.fixture(autouse=True)
def _clean_up(clean_slate):
    yield


def address(ref: str) -> str:
    return minirun("inspect", "-f", "{{.NetworkSettings.IPAddress}}", ref).stdout.strip()


def nslookup(querier: str, name: str) -> str:
    return minirun("exec", querier, "busybox", "nslookup", name).stdout


def test_names_resolve_on_a_user_network_including_later_containers():
    assert minirun("network", "create", "app").returncode == 0
    assert (
        minirun("run", "-d", "--network", "app", "--name", "db", "--hostname", "database", "sleep", "30").returncode
        == 0
    )
    assert minirun("run", "-d", "--network", "app", "--name", "web", "sleep", "30").returncode == 0
    resolv = minirun("exec", "web", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.78.0.1" in resolv  # the network's gateway, minirun's resolver
    for name in ("db", "database"):  # the container's name and its hostname
        assert f"Address: {address('db')}" in nslookup("web", name)
    # a container started after the querier
    assert minirun("run", "-d", "--network", "app", "--name", "cache", "sleep", "30").returncode == 0
    assert f"Address: {address('cache')}" in nslookup("web", "cache")
    ping = minirun("exec", "web", "busybox", "ping", "-c", "1", "-W", "2", "db")
    assert ping.returncode == 0 and f"PING db ({address('db')})" in ping.stdout
    lookup = minirun("exec", "web", PYTHON, "-c", "import socket; print(socket.gethostbyname('cache'))")
    assert lookup.stdout.strip() == address("cache")
    assert "NXDOMAIN" in nslookup("web", "no-such-container")


def test_pod_names_and_other_networks():
    assert minirun("network", "create", "app").returncode == 0
    assert minirun("network", "create", "other").returncode == 0
    assert minirun("pod", "create", "--network", "app", "api").returncode == 0
    pod_ip = json.loads(minirun("pod", "inspect", "api").stdout)["IPAddress"]
    assert minirun("run", "-d", "--pod", "api", "--name", "api-server", "sleep", "30").returncode == 0
    assert minirun("run", "-d", "--network", "app", "--name", "client", "sleep", "30").returncode == 0
    assert minirun("run", "-d", "--network", "other", "--name", "stranger", "sleep", "30").returncode == 0
    assert f"Address: {pod_ip}" in nslookup("client", "api")  # a pod's name
    assert f"Address: {pod_ip}" in nslookup("client", "api-server")  # a member's name -> the pod's address
    assert "NXDOMAIN" in nslookup("stranger", "client")  # names belong to their network
    assert "NXDOMAIN" in nslookup("stranger", "api")


def test_default_network_has_no_resolver():
    """As on Docker's default bridge: the host's nameservers (minus loopback ones), no resolver of minirun's
    (nothing is queried here)."""
    with open("/etc/resolv.conf") as f:
        host = re.findall(r"^nameserver (\S+)", f.read(), re.M)
    expected = [s for s in host if not s.startswith("127.") and ":" not in s] or ["8.8.8.8", "8.8.4.4"]
    inside = minirun("run", "--rm", "cat", "/etc/resolv.conf").stdout
    assert re.findall(r"^nameserver (\S+)", inside, re.M) == expected
    assert "10.77.0.1" not in inside


FAKE_UPSTREAM = """
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.2", 53))
print("upstream", flush=True)
while True:
    query, peer = s.recvfrom(512)
    ident, _flags = struct.unpack_from("!HH", query)
    question = query[12:]
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + bytes([192, 0, 2, 99])  # one A record
    s.sendto(struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + question + answer, peer)
"""


def test_unknown_names_are_forwarded_to_the_upstreams(outside, tmp_path):
    """The upstream is a fake resolver in the test's own outside namespace: nothing leaves the machine."""
    upstream = subprocess.Popen(
        ["ip", "netns", "exec", outside, PYTHON, "-c", FAKE_UPSTREAM], stdout=subprocess.PIPE, text=True
    )
    try:
        assert upstream.stdout.readline().strip() == "upstream"
        resolv = tmp_path / "upstream.conf"
        resolv.write_text("nameserver 198.51.100.2\n")
        env = {"MINIRUN_DNS_FORWARD": "1", "MINIRUN_DNS_UPSTREAM": str(resolv)}
        assert minirun("network", "create", "app").returncode == 0
        assert minirun("run", "-d", "--network", "app", "--name", "asker", "sleep", "30", env=env).returncode == 0
        assert "Address: 192.0.2.99" in nslookup("asker", "example.test")  # forwarded, answered upstream
        assert f"Address: {address('asker')}" in nslookup("asker", "asker")  # own names still answered here
    finally:
        upstream.kill()
