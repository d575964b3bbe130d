"""Hole 7 of issue 12: the user-network resolver was an open resolver.

Network A's resolver on its gateway:53 answered A's names to network B, to the default network and to a
neighbour outside the host, and with forwarding on it recursed for anyone who could route to a gateway.
Every forwarded query got a thread of its own, with no cap (257 threads after 600 queries), and when no
thread could be made the supervisor died and DNS was gone on every network. No query here leaves the
machine: the only upstream is a socket in the test's own outside namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from minirun.runtime.supervisor.resolver import FORWARD_WORKERS
from tests.integration.conftest import OUTSIDE_HOST_IP, OUTSIDE_PEER_IP, PYTHON, minirun, records, wait_for

# One A query for NAME to SERVER:53; prints "answer IP", "rcode N" or "timeout".
QUERY = r"""
import random, socket, struct, sys
server, name, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
ident = random.randrange(65536)
question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(timeout)
s.sendto(struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question, (server, 53))
try:
    reply = s.recv(512)
except (socket.timeout, ConnectionRefusedError) as exc:
    print("timeout" if isinstance(exc, socket.timeout) else "refused")
    sys.exit(0)
rcode, count = reply[3] & 0x0F, struct.unpack_from("!H", reply, 6)[0]
print(f"answer {socket.inet_ntoa(reply[-4:])}" if rcode == 0 and count else f"rcode {rcode}")
"""

# From a container on the network: COUNT queries for names nobody knows, as fast as they go, then a query
# loop for LOCAL that measures how soon after the flood a local name is answered. A query that finds the
# resolver's socket queue full is dropped by the kernel (as under any UDP flood), so the loop asks again
# every 10 ms, as a stub resolver would, only faster.
FLOOD = r"""
import json, socket, struct, sys, time
server, count, local = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def query(ident, name):
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question

flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
flood.connect((server, 53))
for i in range(count):
    flood.send(query(i, f"nobody-{i}.flood.test"))
flood_end = time.monotonic()
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.connect((server, 53))
probe.settimeout(0.01)
answered, round_trip, attempts = None, None, 0
while answered is None and time.monotonic() - flood_end < 5:
    attempts += 1
    sent = time.monotonic()
    probe.send(query(40000 + attempts, local))
    try:
        while True:
            reply = probe.recv(512)
            if reply[3] & 0x0F == 0 and struct.unpack_from("!H", reply, 6)[0] == 1:
                break
    except socket.timeout:
        continue
    answered, round_trip = time.monotonic() - flood_end, time.monotonic() - sent
flood.setblocking(False)
servfail = 0
try:
    while True:
        servfail += flood.recv(512)[3] & 0x0F == 2
except BlockingIOError:
    pass
print(json.dumps({"answered": answered, "round_trip": round_trip, "attempts": attempts, "servfail": servfail}))
"""


@pytest.fixture(autouse=True)
def _clean_up(clean_slate):
    yield


def ask(querier: str, server: str, name: str, timeout: float = 1.0) -> str:
    """What a container (or, as "outside", the neighbour host) gets asking `server` for `name`."""
    if querier == "outside":
        cmd = ["ip", "netns", "exec", "outside", PYTHON, "-c", QUERY, server, name, str(timeout)]
        result = subprocess.run(cmd, capture_output=True, text=True)
    else:
        result = minirun("exec", querier, PYTHON, "-c", QUERY, server, name, str(timeout))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def address(container: str) -> str:
    return minirun("inspect", "-f", "{{.NetworkSettings.IPAddress}}", container).stdout.strip()


def dropped_by_firewall() -> int:
    chain = subprocess.run(
        ["nft", "-j", "list", "chain", "inet", "minirun", "dns-guard"], capture_output=True, text=True
    ).stdout
    items = json.loads(chain or '{"nftables": []}')["nftables"]
    return sum(
        expr["counter"]["packets"]
        for item in items
        if "rule" in item
        for expr in item["rule"]["expr"]
        if "counter" in expr
    )


def test_a_networks_resolver_answers_only_its_own_network(outside, state_dir):
    """Hole 7: network A's resolver gives A's names to nobody else - not network B, not the default network,
    not a neighbour that routes to A's gateway - first by the firewall, and by the server itself when the
    firewall's rules are gone. A's own containers still get answers."""
    for name in ("dnsa", "dnsb"):
        assert minirun("network", "create", name).returncode == 0
    gateway = json.loads(minirun("network", "inspect", "dnsa").stdout)["Gateway"]
    subnet = json.loads(minirun("network", "inspect", "dnsa").stdout)["Subnet"]
    for name, network in (("alpha", "dnsa"), ("beta", "dnsb"), ("gamma", "bridge")):
        assert minirun("run", "-d", "--name", name, "--network", network, "sleep", "60").returncode == 0
    subprocess.run(["ip", "-n", outside, "route", "add", subnet, "via", OUTSIDE_HOST_IP], check=True)
    strangers = ("beta", "gamma", "outside")

    assert ask("alpha", gateway, "alpha") == f"answer {address('alpha')}"
    for querier in strangers:
        assert ask(querier, gateway, "alpha") == "timeout", querier
    assert dropped_by_firewall() >= len(strangers)

    # the server's own wall: with the firewall's rules gone (a flush), it still answers nobody else
    subprocess.run(["nft", "flush", "chain", "inet", "minirun", "dns-guard"], check=True)
    for querier in strangers:
        assert ask(querier, gateway, "alpha") == "timeout", querier
    assert ask("alpha", gateway, "alpha") == f"answer {address('alpha')}"
    log = (state_dir / "supervisor.log").read_text()
    assert "for network dnsa from outside it" in log and f"it answers only {subnet} on mr-dnsa" in log

    # and the next run on the network puts the firewall's rules back
    assert minirun("run", "--rm", "--network", "dnsa", "true").returncode == 0
    assert (
        dropped_by_firewall() == 0
        and "minirun dns network=dnsa"
        in subprocess.run(
            ["nft", "list", "chain", "inet", "minirun", "dns-guard"], capture_output=True, text=True
        ).stdout
    )


def test_a_flood_of_forwarded_queries_leaves_the_resolver_bounded_and_answering(outside, tmp_path, state_dir):
    """Hole 7: 2000 queries for unknown names, forwarded to an upstream that never answers, leave the
    supervisor alive (same pid) with a bounded number of threads; the excess is answered SERVFAIL at once
    and a local name is still answered within 100 ms right after the flood."""
    sink = subprocess.Popen(  # an upstream that takes every query and never answers
        ["ip", "netns", "exec", outside, PYTHON, "-c", "import socket,sys,time\n"
         f"s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{OUTSIDE_PEER_IP}', 53))\n"
         "print('bound', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert sink.stdout.readline().strip() == "bound"
        upstream = tmp_path / "upstream.conf"
        upstream.write_text(f"nameserver {OUTSIDE_PEER_IP}\n")
        env = {"MINIRUN_DNS_FORWARD": "1", "MINIRUN_DNS_UPSTREAM": str(upstream)}
        assert minirun("network", "create", "flood").returncode == 0
        gateway = json.loads(minirun("network", "inspect", "flood").stdout)["Gateway"]
        for name in ("target", "flooder"):
            assert minirun("run", "-d", "--network", "flood", "--name", name, "sleep", "120", env=env).returncode == 0
        supervisor = records(state_dir)[0]["owner"]["pid"]
        assert ask("flooder", gateway, "forwarded.example.test", timeout=3.5) == "rcode 2"  # forwarding is on

        flooded = minirun("exec", "flooder", PYTHON, "-c", FLOOD, gateway, "2000", "target", timeout=120)
        assert flooded.returncode == 0, flooded.stderr
        result = json.loads(flooded.stdout)
        status = Path(f"/proc/{supervisor}/status").read_text()
        threads = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))

        assert all(r["owner"]["pid"] == supervisor for r in records(state_dir))
        assert os.path.exists(f"/proc/{supervisor}") and "zombie" not in status
        assert threads <= 1 + FORWARD_WORKERS, status
        assert result["servfail"] > 0, result  # the excess, answered at once
        print(f"flood: {result}, supervisor threads {threads}")
        assert result["answered"] is not None and result["answered"] < 0.1, result  # the bound
        assert ask("flooder", gateway, "target") == f"answer {address('target')}"
        wait_for(lambda: ask("target", gateway, "flooder") == f"answer {address('flooder')}", what="answers")
    finally:
        sink.kill()
        sink.wait()


def test_doctor_reports_and_fixes_missing_resolver_rules():
    """Hole 7: `doctor` notices that a user network's resolver is no longer fenced in by the firewall
    (after a flush), and `doctor --fix` puts the rules back."""
    assert minirun("network", "create", "fenced").returncode == 0
    subprocess.run(["nft", "flush", "chain", "inet", "minirun", "dns-guard"], check=True)
    found = minirun("doctor")
    assert found.returncode == 1
    assert "FAIL   DNS: no firewall rules keep other networks off the resolver at 10.78.0.1:53" in found.stdout
    assert 'iifname "mr-fenced" ip saddr 10.78.0.0/16 accept comment "minirun dns network=fenced"' in found.stdout
    fixed = minirun("doctor", "--fix")
    assert "fixed  DNS: no firewall rules keep other networks off the resolver" in fixed.stdout, fixed.stdout
    assert "ok     DNS: only 10.78.0.0/16 on mr-fenced may query 10.78.0.1:53" in minirun("doctor").stdout
