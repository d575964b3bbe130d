"""`minirun doctor` finds each deliberately broken thing and `--fix` repairs minirun's own."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.conftest import delete_link, minirun, wait_for


@pytest.fixture
def pod():
    assert minirun("pod", "create", "doc").returncode == 0
    yield "doc"
    minirun("pod", "rm", "-f", "doc")
    delete_link("vethstray")


def failures(output: str) -> list[str]:
    return [line[7:] for line in output.splitlines() if line.startswith("FAIL")]


def test_healthy_host_and_pod(pod):
    result = minirun("doctor", pod)
    assert result.returncode == 0, result.stdout
    assert failures(result.stdout) == []
    assert "ok     pod doc: loopback is up" in result.stdout
    assert "ok     NAT: the masquerade rule for 10.77.0.0/16 is in place" in result.stdout


BREAKAGES = [
    (
        ["ip", "-n", "minirun-doc", "link", "set", "lo", "down"],
        "pod doc: loopback is down",
        "ip netns exec minirun-doc ip link set lo up",
    ),
    (
        ["ip", "-n", "minirun-doc", "route", "del", "default"],
        "pod doc: no default route via 10.77.0.1",
        "ip netns exec minirun-doc ip route add default via 10.77.0.1",
    ),
    (
        ["nft", "flush", "chain", "inet", "minirun", "masq-minirun"],
        "NAT: no masquerade rule for 10.77.0.0/16",
        "nft -f -",
    ),
    (["sysctl", "-qw", "net.ipv4.ip_forward=0"], "IP forwarding is off", "sysctl -w net.ipv4.ip_forward=1"),
    (["ip", "link", "set", "minirun0", "down"], "bridge minirun0 is down", "ip link set minirun0 up"),
    (
        ["sh", "-c", "ip link add vethstray type veth peer name strayp && ip link set vethstray master minirun0"],
        "leaked veth vethstray on minirun0",
        "ip link delete vethstray",
    ),
    (
        ["ip", "-n", "minirun-doc", "link", "set", "eth0", "down"],
        "pod doc: eth0 is down",
        "ip netns exec minirun-doc ip link set eth0 up",
    ),
]


@pytest.mark.parametrize(("breakage", "finding", "fix"), BREAKAGES, ids=[b[1] for b in BREAKAGES])
def test_each_breakage_is_found_and_fixed(pod, breakage, finding, fix):
    subprocess.run(breakage, check=True)
    found = minirun("doctor", pod)
    assert found.returncode == 1
    assert any(line.startswith(finding) for line in failures(found.stdout)), found.stdout
    assert f"fix: {fix}" in found.stdout
    repaired = minirun("doctor", "--fix", pod)
    assert f"fixed  {finding}" in repaired.stdout, repaired.stdout
    assert repaired.returncode == 0 and failures(repaired.stdout) == []
    assert minirun("doctor", pod).returncode == 0


def test_docker_forward_drop_without_accepts_is_found_and_fixed(pod, docker_forward_drop):
    found = minirun("doctor")
    assert any("DOCKER-USER has no accept for minirun0" in f for f in failures(found.stdout)), found.stdout
    assert minirun("doctor", "--fix").returncode == 0
    chain = subprocess.run(
        ["nft", "list", "chain", "ip", "filter", "DOCKER-USER"], capture_output=True, text=True
    ).stdout
    assert chain.count("minirun network=minirun") == 4


def test_leaked_address_record_is_found(pod, state_dir):
    leaked = state_dir / "ipam" / "minirun" / "10.77.200.200"
    leaked.write_text("deadbeef0000\neth0")
    found = minirun("doctor")
    assert any(f.startswith("leaked address record 10.77.200.200") for f in failures(found.stdout))
    assert minirun("doctor", "--fix").returncode == 0 and not leaked.exists()


def test_mtu_larger_than_the_uplink(state_dir):
    subprocess.run(["ip", "link", "add", "wan0", "mtu", "1400", "type", "veth", "peer", "name", "wanp"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "192.0.2.1/24", "dev", "wan0"], check=True)
        subprocess.run(["ip", "link", "set", "wan0", "up"], check=True)
        subprocess.run(["ip", "route", "add", "default", "via", "192.0.2.254", "dev", "wan0", "onlink"], check=True)
        run = minirun("run", "-d", "--name", "jumbo", "--mtu", "1500", "sleep", "30")
        assert run.returncode == 0, run.stderr
        found = minirun("doctor")
        assert any(
            "container jumbo has MTU 1500, larger than the uplink wan0's 1400" in f for f in failures(found.stdout)
        ), found.stdout
    finally:
        minirun("rm", "-f", "jumbo")
        delete_link("wan0")


def test_doctor_on_a_container_that_is_not_running():
    assert minirun("run", "-d", "--name", "done", "true").returncode == 0
    wait_for(
        lambda: json.loads(minirun("inspect", "done").stdout)[0]["State"]["Status"] == "exited",
        what="container done exited",
    )
    found = minirun("doctor", "done")
    assert found.returncode == 1 and "container done is not running" in found.stdout
    minirun("rm", "-f", "done")
