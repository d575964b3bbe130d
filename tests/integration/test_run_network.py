"""Bridge networking as the kernel shows it: links, addresses, routes, rules, and packets that cross."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import os
import signal
import subprocess

from pyroute2 import IPRoute

from tests.integration.conftest import (
    CLIENT,
    LISTENER,
    MINIRUN,
    OUTSIDE_HOST_IP,
    OUTSIDE_PEER_IP,
    PYTHON,
    host_links,
    listen_in_netns,
    minirun,
    nft_ruleset,
    records,
    spawn,
    wait_for,
    wait_running,
)

SUBNET = ipaddress.IPv4Network("10.77.0.0/16")
SHOW = "ip -j link show; echo ---; ip -j -4 addr show; echo ---; ip -j -4 route show"


def masquerade_chain() -> str:
    return subprocess.run(
        ["nft", "list", "chain", "inet", "minirun", "masq-minirun"], capture_output=True, text=True, check=True
    ).stdout


def inspect_inside(*extra: str) -> tuple[list, list, list]:
    result = minirun("run", *extra, "sh", "-c", SHOW)
    assert result.returncode == 0, result.stderr
    links, addrs, routes = (json.loads(part) for part in result.stdout.split("---\n"))
    return links, addrs, routes


def test_container_sees_lo_and_eth0_with_address_and_default_route():
    links, addrs, routes = inspect_inside()
    assert sorted(link["ifname"] for link in links) == ["eth0", "lo"]
    assert all("UP" in link["flags"] for link in links)
    eth0 = next(a for a in addrs if a["ifname"] == "eth0")["addr_info"][0]
    address = ipaddress.IPv4Address(eth0["local"])
    assert address in SUBNET and eth0["prefixlen"] == 16
    assert address not in (SUBNET.network_address, SUBNET.network_address + 1, SUBNET.broadcast_address)
    default = next(r for r in routes if r["dst"] == "default")
    assert default["gateway"] == "10.77.0.1" and default["dev"] == "eth0"


def test_bridge_host_veth_and_ipv6_off(state_dir, fresh_bridge):
    proc = spawn(
        "run",
        "--mtu",
        "1400",
        "sh",
        "-c",
        "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6; ip -j link show eth0; exec sleep 30",
    )
    assert proc.stdout.readline().strip() == "1"
    eth0 = json.loads(proc.stdout.readline())[0]
    (record,) = wait_running(state_dir)
    links = host_links()
    veth = record["network"]["host_veth"]
    assert veth.startswith("veth") and len(veth) <= 15
    assert links["minirun0"]["kind"] == "bridge" and links["minirun0"]["up"]
    assert links[veth]["kind"] == "veth" and links[veth]["up"]
    assert links[veth]["master"] == links["minirun0"]["index"]
    assert links[veth]["mtu"] == 1400 and eth0["mtu"] == 1400
    for name in ("minirun0", veth):
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6") as f:
            assert f.read().strip() == "1"
    with IPRoute() as ipr:
        gateway = [a.get_attr("IFA_LOCAL") for a in ipr.get_addr(index=links["minirun0"]["index"], family=2)]
    assert gateway == ["10.77.0.1"]
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == "1"
    os.kill(record["pid"], signal.SIGKILL)
    proc.wait(timeout=10)
    wait_for(lambda: veth not in host_links(), timeout=3, what="veth gone with the netns")


def test_one_masquerade_rule_per_network():
    for _ in range(3):
        assert minirun("run", "true").returncode == 0
    rules = nft_ruleset()
    assert masquerade_chain().count("masquerade") == 1
    assert "ip saddr 10.77.0.0/16 ip daddr != 10.77.0.0/16 masquerade" in rules
    assert 'comment "minirun network=minirun"' in rules


def test_nat_source_is_the_host_address(outside):
    listener = listen_in_netns(outside, 9000)
    result = minirun("run", PYTHON, "-c", CLIENT, OUTSIDE_PEER_IP, "9000", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pong"
    peer, payload = listener.communicate(timeout=10)[0].split()
    assert (peer, payload) == (OUTSIDE_HOST_IP, "ping")  # masqueraded: not the 10.77 address


def gated_client(address: str, port: int, timeout: float = 5) -> subprocess.Popen:
    """A container that connects once the test writes a line to its stdin."""
    proc = subprocess.Popen(
        [MINIRUN, "run", "sh", "-c", f"read go && exec {PYTHON} -c '{CLIENT}' {address} {port} {timeout}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc


def release(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate("go\n", timeout=30)
    return proc.returncode, out, err


def test_without_the_masquerade_rule_the_source_leaks(outside, state_dir):
    """Negative control for the NAT test: with our rule flushed, the outside sees the container's address."""
    subprocess.run(["ip", "-n", outside, "route", "add", str(SUBNET), "via", OUTSIDE_HOST_IP], check=True)
    listener = listen_in_netns(outside, 9001)
    client = gated_client(OUTSIDE_PEER_IP, 9001)
    (record,) = wait_running(state_dir)
    subprocess.run(["nft", "flush", "chain", "inet", "minirun", "masq-minirun"], check=True)
    code, out, err = release(client)
    assert (code, out.strip()) == (0, "pong"), err
    peer = listener.communicate(timeout=10)[0].split()[0]
    assert peer == record["network"]["address"].split("/")[0]
    assert minirun("run", "true").returncode == 0
    assert "masquerade" in nft_ruleset()  # the next run converges the rule back


def test_two_containers_reach_each_other(state_dir):
    server = spawn("run", "--name", "server", PYTHON, "-c", LISTENER, "8080", "10")
    assert server.stdout.readline().strip() == "listening"
    (record,) = wait_running(state_dir)
    address = record["network"]["address"].split("/")[0]
    client = minirun("run", PYTHON, "-c", CLIENT, address, "8080", "5")
    assert client.stdout.strip() == "pong", client.stderr
    peer, _ = server.communicate(timeout=10)[0].split()
    assert ipaddress.IPv4Address(peer) in SUBNET and peer != address  # no NAT between containers


def test_parallel_runs_get_distinct_addresses(fresh_bridge):
    """20 runs at once, racing to create the bridge, the nft table and their addresses."""

    def one(_):
        result = minirun("run", "ip", "-4", "-o", "addr", "show", "eth0", timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()[3]

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        addresses = list(pool.map(one, range(20)))
    assert len(set(addresses)) == 20
    assert all(ipaddress.IPv4Interface(a).ip in SUBNET for a in addresses)
    assert masquerade_chain().count("masquerade") == 1


def test_network_none_has_only_loopback_up():
    links, addrs, routes = inspect_inside("--network", "none")
    assert [link["ifname"] for link in links] == ["lo"]
    assert "UP" in links[0]["flags"]
    assert routes == []


def test_sys_shows_the_container_links():
    result = minirun("run", "ls", "/sys/class/net")
    assert sorted(result.stdout.split()) == ["eth0", "lo"]


def test_docker_forward_drop_is_handled(outside, state_dir, docker_forward_drop):
    """Emulate Docker: filter FORWARD policy drop, jumping to DOCKER-USER. Containers must still talk to each
    other over the bridge (bridge netfilter sends that through FORWARD too) and reach the outside."""
    server = spawn("run", PYTHON, "-c", LISTENER, "8080", "10")
    assert server.stdout.readline().strip() == "listening"
    (record,) = wait_running(state_dir)
    address = record["network"]["address"].split("/")[0]
    rules = subprocess.run(
        ["nft", "list", "chain", "ip", "filter", "DOCKER-USER"], capture_output=True, text=True
    ).stdout
    assert rules.count('comment "minirun network=minirun"') == 4
    client = minirun("run", PYTHON, "-c", CLIENT, address, "8080", "5")
    assert client.stdout.strip() == "pong", client.stderr
    server.wait(timeout=10)

    # Negative control: without our accepts the DROP policy really does cut the bridge.
    server = spawn("run", PYTHON, "-c", LISTENER, "8081", "4")
    assert server.stdout.readline().strip() == "listening"
    (running,) = wait_running(state_dir)
    client = gated_client(running["network"]["address"].split("/")[0], 8081, timeout=1)
    wait_running(state_dir, count=2)
    listing = subprocess.run(
        ["nft", "-a", "list", "chain", "ip", "filter", "DOCKER-USER"], capture_output=True, text=True, check=True
    ).stdout
    for line in listing.splitlines():
        if "minirun network=minirun" in line:
            handle = line.rsplit("handle", 1)[1].strip()
            subprocess.run(["nft", "delete", "rule", "ip", "filter", "DOCKER-USER", "handle", handle], check=True)
    code, out, err = release(client)
    assert code != 0 and "timed out" in err
    server.wait(timeout=10)

    # The next run restores the accepts and reaches the outside through NAT.
    listener = listen_in_netns(outside, 9002)
    result = minirun("run", PYTHON, "-c", CLIENT, OUTSIDE_PEER_IP, "9002", "5")
    assert result.stdout.strip() == "pong", result.stderr
    assert listener.communicate(timeout=10)[0].split()[0] == OUTSIDE_HOST_IP
    assert records(state_dir) == []


def test_bridge_mac_stays_put_as_ports_come_and_go(state_dir, fresh_bridge):
    """A bridge without a fixed MAC takes its lowest port's: containers' ARP entries for the gateway would
    go stale whenever a container joins (seconds of lost DNS, NAT and published ports)."""
    procs = [spawn("run", "sleep", "30")]
    wait_running(state_dir)
    mac = host_links_mac("minirun0")
    assert int(mac.split(":")[0], 16) & 0x02  # locally administered: ours, not a port's
    procs += [spawn("run", "sleep", "30") for _ in range(6)]
    wait_running(state_dir, count=7)
    assert host_links_mac("minirun0") == mac
    for record in records(state_dir):
        os.kill(record["pid"], signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=10)


def host_links_mac(name: str) -> str:
    with IPRoute() as ipr:
        (link,) = ipr.get_links(ifname=name)
        return link.get_attr("IFLA_ADDRESS")
