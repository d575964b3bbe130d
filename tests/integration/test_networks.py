"""User networks: own bridge and subnet, isolation between networks, outside and host still reachable."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.conftest import (
    OUTSIDE_HOST_IP,
    OUTSIDE_PEER_IP,
    PYTHON,
    host_links,
    minirun,
    nft_ruleset,
    wait_for,
)

SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(16)
print("serving", flush=True)
while True:
    c, peer = s.accept(); c.sendall(f"hi {peer[0]}".encode()); c.close()
"""
CLIENT = "import socket,sys; print(socket.create_connection((sys.argv[1], 80), timeout=2).recv(100).decode())"


@pytest.fixture(autouse=True)
def _clean_up(clean_slate):
    yield


def serve(name: str, network: str) -> str:
    assert minirun("run", "-d", "--name", name, "--network", network, PYTHON, "-c", SERVER).returncode == 0
    wait_for(lambda: "serving" in minirun("logs", name).stdout, what=f"{name} serving")
    return minirun("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()


def reach(address: str, network: str) -> str:
    result = minirun("run", "--rm", "--network", network, PYTHON, "-c", CLIENT, address)
    return result.stdout.strip() if result.returncode == 0 else "unreachable"


def test_create_inspect_and_isolation(outside):
    assert minirun("network", "create", "front").returncode == 0
    assert (
        minirun("network", "create", "back", "--subnet", "10.200.0.0/24", "--gateway", "10.200.0.254").returncode == 0
    )
    front = json.loads(minirun("network", "inspect", "front").stdout)
    back = json.loads(minirun("network", "inspect", "back").stdout)
    assert front["Bridge"] == "mr-front" and front["Subnet"] == "10.78.0.0/16" and front["Gateway"] == "10.78.0.1"
    assert back["Subnet"] == "10.200.0.0/24" and back["Gateway"] == "10.200.0.254"
    assert host_links()["mr-front"]["kind"] == "bridge"
    a = serve("a", "front")
    b = serve("b", "back")
    c = serve("c", "bridge")
    assert a.startswith("10.78.") and b.startswith("10.200.0.") and c.startswith("10.77.")
    assert reach(a, "front").startswith("hi 10.78.")  # same network: yes
    assert reach(a, "back") == "unreachable"  # across networks: no
    assert reach(b, "front") == "unreachable"
    assert reach(a, "bridge") == "unreachable"  # the default network is isolated too
    assert reach(c, "front") == "unreachable"
    host = subprocess.run([PYTHON, "-c", CLIENT, a], capture_output=True, text=True)
    assert host.stdout.strip() == "hi 10.78.0.1"  # the host reaches every network
    listener = subprocess.Popen(
        ["ip", "netns", "exec", outside, PYTHON, "-c", SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert listener.stdout.readline().strip() == "serving"
        for network in ("front", "back"):  # and each network reaches the outside through NAT
            assert reach(OUTSIDE_PEER_IP, network) == f"hi {OUTSIDE_HOST_IP}"
    finally:
        listener.kill()


def test_internal_network_has_no_way_out(outside):
    assert minirun("network", "create", "--internal", "vault").returncode == 0
    inside = serve("safe", "vault")
    assert reach(inside, "vault").startswith("hi ")  # within the network: fine
    listener = subprocess.Popen(
        ["ip", "netns", "exec", outside, PYTHON, "-c", SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert listener.stdout.readline().strip() == "serving"
        assert reach(OUTSIDE_PEER_IP, "vault") == "unreachable"
        assert "masq-vault" not in nft_ruleset()
    finally:
        listener.kill()


def test_subnet_auto_selection_avoids_host_routes_and_other_networks():
    subprocess.run(["ip", "link", "add", "lan9", "type", "veth", "peer", "name", "lan9p"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.78.5.1/24", "dev", "lan9"], check=True)
        subprocess.run(["ip", "link", "set", "lan9", "up"], check=True)
        assert minirun("network", "create", "n1").returncode == 0
        assert minirun("network", "create", "n2").returncode == 0
        subnets = [json.loads(minirun("network", "inspect", n).stdout)["Subnet"] for n in ("n1", "n2")]
        assert subnets == ["10.79.0.0/16", "10.80.0.0/16"]  # 10.78/16 overlaps the host's 10.78.5.0/24
    finally:
        subprocess.run(["ip", "link", "delete", "lan9"], capture_output=True)


def test_network_rm_refuses_while_in_use_and_cleans_up():
    assert minirun("network", "create", "busy").returncode == 0
    serve("user", "busy")
    refused = minirun("network", "rm", "busy")
    assert refused.returncode == 1 and "network busy is in use by container user" in refused.stderr
    assert minirun("rm", "-f", "user").returncode == 0
    assert minirun("network", "rm", "busy").returncode == 0
    assert "mr-busy" not in host_links()
    rules = nft_ruleset()
    assert "network=busy" not in rules and "mr-busy" not in rules
    assert minirun("network", "rm", "busy").returncode == 1


def test_pod_on_a_network():
    assert minirun("network", "create", "podnet").returncode == 0
    assert minirun("pod", "create", "--network", "podnet", "pn").returncode == 0
    try:
        address = json.loads(minirun("pod", "inspect", "pn").stdout)["IPAddress"]
        assert address.startswith("10.78.")
        assert minirun("network", "rm", "podnet").returncode == 1  # the pod uses it
    finally:
        minirun("pod", "rm", "-f", "pn")


def test_network_create_dry_run_and_bad_input():
    dry = minirun("network", "create", "--dry-run", "planned")
    assert dry.returncode == 0 and "ip link add mr-planned address <fixed 02:… MAC> type bridge" in dry.stderr
    assert "mr-planned" not in host_links()
    assert "planned" not in minirun("network", "ls").stdout
    for args, message in (
        (["network", "create", "Bad!"], "invalid network name"),
        (["network", "create", "x", "--subnet", "10.77.1.0/24"], "overlaps network minirun"),
        (["network", "create", "y", "--subnet", "10.201.0.0/24", "--gateway", "10.9.9.9"], "not a usable address"),
        (["run", "--network", "nosuch", "true"], 'unknown network "nosuch"'),
        (["network", "rm", "minirun"], "cannot be removed"),
    ):
        result = minirun(*args)
        assert result.returncode in (1, 125) and message in result.stderr, (args, result.stderr)


def test_user_network_beside_docker(outside, docker_forward_drop):
    """Docker's FORWARD DROP holds for every minirun network: each gets its own accepts."""
    assert minirun("network", "create", "dock").returncode == 0
    a = serve("da", "dock")
    assert reach(a, "dock").startswith("hi 10.78.")
    chain = subprocess.run(["nft", "list", "chain", "ip", "filter", "DOCKER-USER"], capture_output=True, text=True)
    assert chain.stdout.count('comment "minirun network=dock"') == 4
    listener = subprocess.Popen(
        ["ip", "netns", "exec", outside, PYTHON, "-c", SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert listener.stdout.readline().strip() == "serving"
        assert reach(OUTSIDE_PEER_IP, "dock") == f"hi {OUTSIDE_HOST_IP}"
    finally:
        listener.kill()
    minirun("rm", "-f", "da")
    assert minirun("network", "rm", "dock").returncode == 0
    chain = subprocess.run(["nft", "list", "chain", "ip", "filter", "DOCKER-USER"], capture_output=True, text=True)
    assert "network=dock" not in chain.stdout  # its accepts went with it


def test_network_mtu_applies_to_its_bridge_and_containers():
    assert minirun("network", "create", "--mtu", "1400", "small").returncode == 0
    assert host_links()["mr-small"]["mtu"] == 1400
    inside = minirun("run", "--rm", "--network", "small", "cat", "/sys/class/net/eth0/mtu")
    assert inside.stdout.strip() == "1400"
