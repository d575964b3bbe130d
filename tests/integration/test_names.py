"""Names on user networks, answered by minirun's resolver on the network's gateway (and only by it: no
query in these tests can leave the machine - unknown names get NXDOMAIN, nothing is forwarded)."""

from __future__ import annotations

import json

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
    """As on Docker's default bridge: the container keeps the host's resolv.conf (not queried here)."""
    with open("/etc/resolv.conf") as f:
        host = f.read()
    inside = minirun("run", "--rm", "cat", "/etc/resolv.conf").stdout
    assert inside == host and "minirun" not in inside
