"""--explain / --dry-run / -v: the explanation is the plan that runs, and a dry run changes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import host_links, minirun, nft_ruleset, records


def snapshot(state_dir) -> tuple:
    files = sorted(str(p.relative_to(state_dir)) for p in state_dir.rglob("*")) if state_dir.exists() else []
    netns = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        forward = f.read()
    return sorted(host_links()), nft_ruleset(), files, netns, forward


@pytest.fixture
def fresh_firewall():
    """Start without minirun's nft table: earlier tests leave the NAT rules in place (only the bridge is
    made fresh otherwise), and then `nat` would only say they are there."""
    subprocess.run(["nft", "delete", "table", "inet", "minirun"], capture_output=True)


def test_explain_shows_the_real_values_that_the_kernel_then_has(fresh_bridge, fresh_firewall):
    """The nat step used to be checked with `"masquerade" in text or "...already in place" in text`, which
    holds whatever the run did. With a fresh table the rule must be explained and then be in the kernel;
    the "already in place" branch has its own test below."""
    result = minirun("run", "--explain", "sh", "-c", "ip -4 -o addr show eth0; cat /proc/self/cgroup >/dev/null")
    assert result.returncode == 0, result.stderr
    text = result.stderr
    steps = re.findall(r"^minirun: step \d+: (\S+)", text, re.M)
    assert steps == [
        "namespaces",
        "bridge",
        "ip-forward",
        "nat",
        "ipam",
        "veth",
        "veth-up",
        "eth0",
        "default-route",
        "exec",
    ]
    explained = re.search(r"ip addr add (10\.77\.\d+\.\d+/16) dev eth0", text).group(1)
    assert f"inet {explained}" in result.stdout  # what was printed is what eth0 got
    pid = re.search(r"host PID (\d+)", text).group(1)
    assert f"netns /proc/{pid}/ns/net" in text
    assert re.search(r"ip link add minirun0 address 02:[0-9a-f:]{14} type bridge", text)  # created by this run
    nat = re.search(r"^minirun: step 4: nat\n((?:    .*\n)+)", text, re.M).group(1)
    assert 'ip saddr 10.77.0.0/16 ip daddr != 10.77.0.0/16 masquerade comment "minirun network=minirun"' in nat
    assert 'masquerade comment "minirun network=minirun"' in nft_ruleset()  # this run applied it


def test_explain_says_what_was_already_there():
    assert minirun("run", "true").returncode == 0
    text = minirun("run", "--explain", "true").stderr
    assert "minirun0 is already there with 10.77.0.1/16: kept" in text
    assert "the NAT and isolation rules for 10.77.0.0/16 are already in place" in text


def test_dry_run_changes_nothing(state_dir, fresh_bridge):
    before = snapshot(state_dir)
    result = minirun("run", "--dry-run", "--name", "ghost", "true")
    assert result.returncode == 0 and result.stdout == ""
    assert "<next free address in 10.77.0.0/16>" in result.stderr
    assert "netns /proc/<pid>/ns/net" in result.stderr
    assert "exec true" in result.stderr
    assert snapshot(state_dir) == before
    assert records(state_dir) == []


def test_pod_create_dry_run_and_explain(state_dir):
    before = snapshot(state_dir)
    dry = minirun("pod", "create", "--dry-run", "planned")
    assert dry.returncode == 0 and dry.stdout == ""
    assert "mount --bind /proc/<pid>/ns/net /run/netns/minirun-planned" in dry.stderr
    assert snapshot(state_dir) == before
    real = minirun("pod", "create", "--explain", "planned")
    assert real.returncode == 0, real.stderr
    address = re.search(r"ip addr add (10\.77\.\d+\.\d+/16) dev eth0", real.stderr).group(1)
    shown = subprocess.run(
        ["ip", "-n", "minirun-planned", "-4", "-o", "addr", "show", "eth0"], capture_output=True, text=True
    ).stdout
    assert address in shown
    assert minirun("pod", "rm", "planned").returncode == 0


def test_verbose_logs_each_step_with_its_duration():
    result = minirun("run", "-v", "--network", "none", "true")
    assert re.search(r"^minirun: step 1: namespaces \(\d+\.\d ms\)$", result.stderr, re.M)
    assert re.search(r"^minirun: step 2: loopback \(\d+\.\d ms\)$", result.stderr, re.M)
    assert "    unshare" not in result.stderr  # -v alone: no commands


def test_removals_explain_what_they_undo(state_dir):
    assert minirun("run", "-d", "--name", "gone", "-p", "8080:80", "sleep", "30").returncode == 0
    address = minirun("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "gone").stdout.strip()
    removed = minirun("rm", "-f", "--explain", "gone")
    assert removed.returncode == 0 and removed.stdout == "gone\n"
    steps = re.findall(r"^minirun: step \d+: (\S+)", removed.stderr, re.M)
    assert steps == ["stop", "address", "ports", "veth", "records"]
    assert f"ipam/minirun/{address}   # back in the pool" in removed.stderr
    assert minirun("pod", "create", "pexp").returncode == 0
    pod_rm = minirun("pod", "rm", "--explain", "pexp")
    # Pins before the veth (the netns goes with its last pin, the veth with it): in the other order the veth
    # step waited its whole grace period (2 s) for a veth still held by the pin, on every `pod rm`.
    assert re.findall(r"^minirun: step \d+: (\S+)", pod_rm.stderr, re.M) == ["pins", "veth", "address", "record"]
    assert "umount /run/netns/minirun-pexp && rm /run/netns/minirun-pexp" in pod_rm.stderr
    assert "ip netns delete minirun-pexp" in pod_rm.stderr
    assert minirun("pod", "create", "-p", "8081:81", "--share", "net,uts,ipc,pid", "pexp2").returncode == 0
    pod_rm = minirun("pod", "rm", "--explain", "pexp2")
    assert re.findall(r"^minirun: step \d+: (\S+)", pod_rm.stderr, re.M) == [
        "init",
        "ports",
        "pins",
        "veth",
        "address",
        "record",
    ]
    assert minirun("network", "create", "nexp").returncode == 0
    net_rm = minirun("network", "rm", "--explain", "nexp")
    assert "ip link delete mr-nexp" in net_rm.stderr and "nft delete chain inet minirun masq-nexp" in net_rm.stderr


def test_a_dry_run_member_of_a_pod_not_ready_changes_nothing(state_dir):
    """Review: `run --dry-run --pod p` with p's record still "creating" (an interrupted `pod create`) went
    through pods.ensure, which really made the pod (and, failing half-way, left a pin and an address with no
    record). A dry run joins only a ready pod; otherwise one line, and nothing changes."""
    assert minirun("pod", "create", "p").returncode == 0
    path = state_dir / "pods" / "p.json"
    ready = json.loads(path.read_text())
    started = int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
    path.write_text(json.dumps({**ready, "status": "creating", "owner": {"pid": os.getpid(), "started": started}}))
    try:
        before = snapshot(state_dir)
        dry = minirun("run", "--dry-run", "--pod", "p", "true")
        assert dry.returncode == 125 and "pod p, which is not ready" in dry.stderr, dry.stderr
        assert len(dry.stderr.splitlines()) == 1
        assert snapshot(state_dir) == before
    finally:
        path.write_text(json.dumps(ready))
    assert minirun("pod", "rm", "p").returncode == 0
