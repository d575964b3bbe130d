"""Pods: shared net/uts/ipc namespaces, one address, localhost between members, `ip netns` interop."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import (
    CLIENT,
    LISTENER,
    PYTHON,
    host_links,
    ipam_reservations,
    minirun,
    nft_ruleset,
    process_states,
    records,
    wait_for,
)

LOOPBACK_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
print("listening", flush=True)
while True:
    c, peer = s.accept()
    c.recv(100)
    c.sendall(b"pong")
    c.close()
"""


@pytest.fixture(autouse=True)
def _clean_up(clean_slate):
    yield


def member(pod: str, *args: str, detach: bool = False) -> subprocess.CompletedProcess:
    return minirun("run", *(["-d"] if detach else ["--rm"]), "--pod", pod, *args)


def pod_inspect(name: str) -> dict:
    result = minirun("pod", "inspect", name)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_members_reach_each_other_on_localhost_and_outsiders_do_not():
    server = member("web", PYTHON, "-c", LOOPBACK_SERVER, "127.0.0.1", "8080", detach=True)
    assert server.returncode == 0, server.stderr
    assert "minirun: created pod web (10.77." in server.stderr  # said once, where the user looks
    wait_for(lambda: "listening" in minirun("logs", server.stdout.strip()).stdout, what="server up")
    public = member("web", PYTHON, "-c", LOOPBACK_SERVER, "0.0.0.0", "8081", detach=True)
    wait_for(lambda: "listening" in minirun("logs", public.stdout.strip()).stdout, what="public server up")
    address = pod_inspect("web")["IPAddress"]

    client = member("web", PYTHON, "-c", CLIENT, "localhost", "8080", "5")
    assert client.returncode == 0 and client.stdout.strip() == "pong", client.stderr
    assert "created pod" not in client.stderr  # joined, not created

    # a container outside the pod: the loopback-bound port is not there, the 0.0.0.0 one is
    refused = minirun("run", "--rm", PYTHON, "-c", CLIENT, address, "8080", "3")
    assert refused.returncode != 0 and "Connection refused" in refused.stderr
    reached = minirun("run", "--rm", PYTHON, "-c", CLIENT, address, "8081", "5")
    assert reached.stdout.strip() == "pong", reached.stderr


def test_members_share_net_uts_ipc_but_not_pid_or_mnt():
    ids = [member("shared", "sleep", "30", detach=True).stdout.strip() for _ in range(2)]
    pids = [json.loads(minirun("inspect", i).stdout)[0]["State"]["Pid"] for i in ids]
    ns = [{n: os.readlink(f"/proc/{pid}/ns/{n}") for n in ("net", "uts", "ipc", "pid", "mnt")} for pid in pids]
    for shared in ("net", "uts", "ipc"):
        assert ns[0][shared] == ns[1][shared]  # the pod's
    for own in ("pid", "mnt"):
        assert ns[0][own] != ns[1][own]  # each member's own
    assert ns[0]["net"] == f"net:[{os.stat('/run/netns/minirun-shared').st_ino}]"  # the pinned netns
    script = "hostname; cat /sys/class/net/eth0/address; ip -4 -o addr show eth0 | awk '{print $4}'; echo $$"
    seen = [minirun("exec", i, "sh", "-c", script).stdout.split() for i in ids]
    assert seen[0][:3] == seen[1][:3]  # same hostname, MAC and address
    assert seen[0][0] == "shared"  # the hostname is the pod's name
    assert seen[0][2] == f"{pod_inspect('shared')['IPAddress']}/16"
    top = [minirun("exec", i, "sh", "-c", "cat /proc/1/comm").stdout.strip() for i in ids]
    assert top == ["sleep", "sleep"]  # each member is PID 1 of its own PID namespace


def test_pod_outlives_its_members_and_keeps_its_address(state_dir):
    assert member("keep", "true").returncode == 0
    document = pod_inspect("keep")
    assert document["Members"] == [] and document["State"] == "Created"
    assert "minirun-keep" in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert document["HostVeth"] in host_links()
    assert any(r.endswith(document["IPAddress"]) for r in ipam_reservations(state_dir))
    again = member("keep", "ip", "-4", "-o", "addr", "show", "eth0")
    assert f"{document['IPAddress']}/16" in again.stdout


def test_pod_rm_leaves_the_host_as_it_was(state_dir):
    rules_before = nft_ruleset()
    assert minirun("pod", "create", "tmp").returncode == 0
    document = pod_inspect("tmp")
    assert document["HostVeth"] in host_links()
    result = minirun("pod", "rm", "tmp")
    assert result.returncode == 0 and result.stdout == "tmp\n"
    assert document["HostVeth"] not in host_links()
    assert "minirun-tmp" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert ipam_reservations(state_dir) == [] and not (state_dir / "pods" / "tmp.json").exists()
    assert nft_ruleset().count("masquerade") == max(1, rules_before.count("masquerade"))
    gone = minirun("pod", "rm", "tmp")
    assert gone.returncode == 1 and "no such pod: tmp" in gone.stderr


def test_pod_rm_refuses_running_members_unless_forced(state_dir):
    assert member("busy", "sleep", "30", detach=True).returncode == 0
    refused = minirun("pod", "rm", "busy")
    assert refused.returncode == 1 and "running member" in refused.stderr and "pod rm -f busy" in refused.stderr
    assert minirun("pod", "rm", "-f", "busy").returncode == 0
    assert records(state_dir) == []


def test_two_pods_reach_each_other_over_the_bridge():
    listener = member("alpha", PYTHON, "-c", LISTENER, "9000", "10", detach=True)
    assert listener.returncode == 0, listener.stderr
    wait_for(lambda: "listening" in minirun("logs", listener.stdout.strip()).stdout, what="alpha listening")
    address = pod_inspect("alpha")["IPAddress"]
    client = member("beta", PYTHON, "-c", CLIENT, address, "9000", "5")
    assert client.stdout.strip() == "pong", client.stderr
    assert pod_inspect("beta")["IPAddress"] != address


def test_ip_netns_commands_work_on_the_pod():
    assert minirun("pod", "create", "seed").returncode == 0
    address = pod_inspect("seed")["IPAddress"]
    shown = subprocess.run(["ip", "netns", "exec", "minirun-seed", "ip", "-br", "addr"], capture_output=True, text=True)
    assert f"{address}/16" in shown.stdout
    routes = subprocess.run(["ip", "-n", "minirun-seed", "route"], capture_output=True, text=True).stdout
    assert "default via 10.77.0.1 dev eth0" in routes
    inside = minirun("exec", "seed", "sh", "-c", "hostname; ip -4 -o addr show eth0")
    assert inside.returncode == 0 and inside.stdout.startswith("seed\n") and f"{address}/16" in inside.stdout


def test_concurrent_first_runs_create_exactly_one_pod(state_dir):
    def run(_):
        return member("race", "ip", "-4", "-o", "addr", "show", "eth0")

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(run, range(6)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert sum("created pod race" in r.stderr for r in results) == 1
    addresses = {r.stdout.split()[3] for r in results}
    assert len(addresses) == 1
    assert len(ipam_reservations(state_dir)) == 1
    assert len([n for n in host_links() if n.startswith("veth")]) == 1


def test_second_member_on_the_same_port_gets_address_in_use():
    first = member("ports", PYTHON, "-c", LOOPBACK_SERVER, "0.0.0.0", "7000", detach=True)
    assert first.returncode == 0, first.stderr
    wait_for(lambda: "listening" in minirun("logs", first.stdout.strip()).stdout, what="first member listening")
    second = member("ports", PYTHON, "-c", LOOPBACK_SERVER, "0.0.0.0", "7000")
    assert second.returncode != 0 and "Address already in use" in second.stderr


def test_ps_and_inspect_show_the_pod():
    container_id = member("shown", "sleep", "30", detach=True).stdout.strip()
    (row,) = [json.loads(line) for line in minirun("ps", "--format", "json").stdout.splitlines()]
    assert row["Pod"] == "shown" and row["IP"] == pod_inspect("shown")["IPAddress"]
    document = json.loads(minirun("inspect", container_id).stdout)[0]
    assert document["Pod"] == "shown" and document["HostConfig"]["NetworkMode"] == "pod:shown"
    listing = minirun("pod", "ls").stdout
    assert "shown" in listing and "Running" in listing and "1/1" in listing


def test_join_path_does_not_import_pyroute2():
    assert minirun("pod", "create", "lean").returncode == 0
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "minirun", "run", "--rm", "--pod", "lean", "true"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "minirun.runtime.container" in result.stderr and "pyroute2" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--pod", "Bad_Name", "true"], 'invalid pod name "Bad_Name"'),
        (["run", "--pod", "p", "--network", "none", "true"], "--network cannot be given to a pod member"),
        (["run", "--pod", "p", "--hostname", "h", "true"], "--hostname cannot be given to a pod member"),
        (["pod", "create", "x" * 70], "invalid pod name"),
        (["pod", "create", "p", "--share", "pid"], 'invalid --share "pid"'),
        (["pod", "inspect", "nosuch"], "no such pod: nosuch"),
    ],
)
def test_bad_pod_input(args, message, state_dir):
    result = minirun(*args)
    assert result.returncode in (1, 125) and message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (state_dir / "pods").exists() or not list((state_dir / "pods").iterdir())


def test_shared_pid_namespace_sees_members_and_reaps_zombies():
    created = minirun("pod", "create", "--share", "net,uts,ipc,pid", "pidpod")
    assert created.returncode == 0, created.stderr
    assert "pid" in pod_inspect("pidpod")["SharedNamespaces"]
    a = member("pidpod", "sleep", "30", detach=True).stdout.strip()
    # `(sleep 2 &)` orphans a process: in a shared PID namespace the pod's init (tini) adopts and reaps it.
    # Seen first (three sleeps), then gone with no zombie left: a pod init that does not reap keeps a
    # "sleep" in state Z, so the second wait times out.
    b = member("pidpod", "sh", "-c", "(sleep 2 &); exec sleep 31", detach=True).stdout.strip()
    wait_for(lambda: [n for n, _ in process_states(a)].count("sleep") == 3, what="the orphan, seen by a")

    def reaped():
        states = process_states(a)
        return states if [n for n, _ in states].count("sleep") == 2 and all(s != "Z" for _, s in states) else None

    states = wait_for(reaped, timeout=10, what="orphan gone and reaped by the pod's init, no zombie")
    names = [name for name, _ in states]
    assert names.count("tini") == 1 and names.count("sleep") == 2  # both members visible
    pids = [json.loads(minirun("inspect", i).stdout)[0]["State"]["Pid"] for i in (a, b)]
    assert os.readlink(f"/proc/{pids[0]}/ns/pid") == os.readlink(f"/proc/{pids[1]}/ns/pid")
    assert process_states("pidpod")[0][0] == "tini"  # exec into the pod itself sees its PID 1
    infra = json.loads((records_root() / "pods" / "pidpod.json").read_text())["infra"]["pid"]
    assert minirun("pod", "rm", "-f", "pidpod").returncode == 0
    from minirun.kernel.proc import start_time

    wait_for(lambda: start_time(infra) is None or ") Z " in Path(f"/proc/{infra}/stat").read_text(), what="init gone")
    assert not os.path.exists(f"/proc/{pids[0]}")


def records_root():
    return Path(os.environ["MINIRUN_STATE_DIR"])


def test_without_shared_pid_namespace_members_are_isolated():
    a = member("nopid", "sleep", "30", detach=True).stdout.strip()
    member("nopid", "sleep", "31", detach=True)
    names = [name for name, _ in process_states(a)]
    assert names.count("sleep") == 1  # only its own


def test_pod_stop_stops_members_and_keeps_the_pod():
    member("stopme", "sleep", "30", detach=True)
    member("stopme", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done", detach=True)
    result = minirun("pod", "stop", "-t", "1", "stopme")
    assert result.returncode == 0 and result.stdout == "stopme\n"
    document = pod_inspect("stopme")
    assert [m["Status"].split()[0] for m in document["Members"]] == ["Exited", "Exited"]
    assert document["State"] == "Exited" and document["IPAddress"]  # the pod keeps its address
    assert "minirun-stopme" in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
