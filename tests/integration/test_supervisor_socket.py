"""Issue 12, hole 3: the supervisor socket is minirun's control plane.

One JSON line on supervisor.sock made the supervisor start a process with every capability, no seccomp and
the host netns; only the socket's mode guarded it. Now the supervisor serves only a peer that is root in
its own mount, pid, net and user namespaces (SO_PEERCRED, checked through a pidfd), refuses and logs
anything else, accepts only requests the CLI could have sent, and reads clients without blocking, so an
idle or half-sent connection (which made `run -d` wait 4.85 s and stalled DNS) holds up nobody.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from minirun.cli import run_args
from minirun.runtime.supervisor import protocol
from tests.integration.conftest import MINIRUN, PYTHON, minirun, records, wait_for

MARK = "4242"  # the attack's command is `sleep 4242`: no process or record may ever carry it

# Sends stdin (or argv[2]) to the socket at argv[1], prints "connected" on stderr once connect() worked,
# then the supervisor's reply on stdout. Plain python3: it must run wherever the attacker runs.
RAW_CLIENT = """
import socket, sys
data = sys.argv[2].encode() if len(sys.argv) > 2 else sys.stdin.buffer.read()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
print("connected", file=sys.stderr, flush=True)
try:
    s.sendall(data)
except OSError:
    pass
reply = b""
try:
    while chunk := s.recv(65536):
        reply += chunk
except ConnectionResetError:
    pass
sys.stdout.write(reply.decode())
"""


@pytest.fixture(autouse=True)
def _clean_up(clean_slate):
    yield


@pytest.fixture
def supervisor(state_dir: Path) -> int:
    """A running supervisor (it serves a detached container); its pid."""
    started = minirun("run", "-d", "sleep", "300")
    assert started.returncode == 0, started.stderr
    (record,) = records(state_dir)
    return record["owner"]["pid"]


def attack_request(*args: str) -> bytes:
    """The line `minirun run -d --privileged sleep 4242` sends: valid in every way but its sender."""
    spec = run_args.parse(["-d", *args, "--privileged", "sleep", MARK], host_env={})
    forwarded = {k: v for k, v in os.environ.items() if k.startswith("MINIRUN_")}
    return encode({"op": "run", "spec": spec._asdict(), "env": forwarded})


def encode(payload: dict) -> bytes:
    return json.dumps(payload).encode() + b"\n"


def send_raw(state_dir: Path, data: bytes, *prefix: str, **kwargs) -> dict:
    """Connect (as `prefix` says: another namespace, another uid), send `data`, return the parsed reply."""
    done = subprocess.run(
        [*prefix, PYTHON, "-c", RAW_CLIENT, kwargs.pop("path", str(state_dir / "supervisor.sock"))],
        input=data,
        capture_output=True,
        timeout=30,
        **kwargs,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"connected" in done.stderr, "connect() itself must succeed: the supervisor's check is under test"
    return json.loads(done.stdout)


def nothing_started(state_dir: Path) -> None:
    assert not [r for r in records(state_dir) if MARK in r.get("command", [])], records(state_dir)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert cmdline != f"sleep\0{MARK}\0".encode(), f"pid {pid} runs the attacker's command"


def supervisor_log(state_dir: Path) -> str:
    return (state_dir / "supervisor.log").read_text()


def test_the_same_request_from_root_in_the_supervisors_namespaces_is_served(state_dir, supervisor):
    """The control for every refusal below: the attack's request itself is one the supervisor serves."""
    reply = send_raw(state_dir, attack_request())
    assert reply["ok"], reply
    (started,) = [r for r in records(state_dir) if MARK in r["command"]]
    assert started["security"]["privileged"]
    assert minirun("rm", "-f", reply["id"]).returncode == 0


@pytest.mark.parametrize(
    ("unshare", "namespace"),
    [(["--net"], "net"), (["--mount"], "mnt"), (["--pid", "--fork"], "pid"), (["--user", "--map-root-user"], "user")],
)
def test_a_root_peer_in_other_namespaces_is_refused_and_logged(state_dir, supervisor, unshare, namespace):
    """Root in a new net, mount or pid namespace (what a container is) is refused; so is root in a new
    user namespace (uid 0 there is mapped to our uid 0, so SO_PEERCRED alone would let it through)."""
    reply = send_raw(state_dir, attack_request(), "unshare", *unshare)
    assert not reply["ok"], reply
    assert "refused this client" in reply["error"]
    assert f"another {namespace} namespace" in reply["error"]
    nothing_started(state_dir)
    assert "refused a client" in supervisor_log(state_dir)
    os.kill(supervisor, 0)


def test_the_cli_run_from_another_namespace_gets_one_clear_line(state_dir, supervisor):
    """`ip netns exec NS minirun run -d` (another net and mount namespace): exit 125, one line saying why
    and what to do, never a traceback; nothing started."""
    subprocess.run(["ip", "netns", "add", "h12-elsewhere"], check=True)
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", "h12-elsewhere", MINIRUN, "run", "-d", "sleep", MARK],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        subprocess.run(["ip", "netns", "delete", "h12-elsewhere"], check=True)
    assert done.returncode == 125, done.stderr
    assert done.stderr.startswith("minirun: error: the minirun supervisor refused this client: peer pid")
    assert "host's namespaces" in done.stderr and done.stderr.count("\n") == 1, done.stderr
    nothing_started(state_dir)


def test_a_privileged_container_cannot_drive_the_supervisor(state_dir, supervisor):
    """The attack as it was made: from inside a container that sees the host's state root."""
    attack = attack_request().decode()
    sock = str(state_dir / "supervisor.sock")
    done = minirun("run", "--privileged", "--network", "none", PYTHON, "-c", RAW_CLIENT, sock, attack)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert not reply["ok"] and "another" in reply["error"], reply
    nothing_started(state_dir)


def test_a_non_root_peer_is_refused_even_when_the_socket_mode_lets_it_connect(state_dir, supervisor):
    """uid 1000 gets through the file mode (opened to it for this test) and is still refused: by the
    supervisor's SO_PEERCRED check, which is what this test is about."""
    sock_path = state_dir / "supervisor.sock"
    os.chmod(sock_path, 0o666)
    # The state root's parents are root's 0700 dirs: uid 1000 reaches the socket through an O_PATH fd.
    path_fd = os.open(sock_path, os.O_PATH)
    try:
        reply = send_raw(
            state_dir,
            attack_request(),
            "setpriv",
            "--reuid=1000",
            "--regid=1000",
            "--clear-groups",
            path=f"/proc/self/fd/{path_fd}",
            pass_fds=(path_fd,),
        )
    finally:
        os.close(path_fd)
    assert not reply["ok"], reply
    assert "uid 1000, not root" in reply["error"]
    nothing_started(state_dir)
    assert "uid 1000, not root" in supervisor_log(state_dir)


def _valid() -> dict:
    return json.loads(attack_request())


def _with_spec(**changes) -> bytes:
    payload = _valid()
    payload["spec"].update(changes)
    return encode(payload)


MALFORMED = {
    "unknown spec field": _with_spec(seccomp_profile="unconfined"),
    "unknown top-level key": encode({**_valid(), "as_root": True}),
    "privileged as a string": _with_spec(privileged="yes"),
    "privileged as a number": _with_spec(privileged=1),
    "command as a string": _with_spec(command=f"sleep {MARK}"),
    "command with a non-string": _with_spec(command=["sleep", 4242]),
    "command with a NUL": _with_spec(command=["sleep", f"{MARK}\0"]),
    "no command and no image": _with_spec(command=[]),
    "not detached": _with_spec(detach=False),
    "tty with detach (the CLI refuses it)": _with_spec(tty=True),
    "bad capability": _with_spec(cap_add=["CAP_EVERYTHING"]),
    "bad security-opt": _with_spec(security_opts=["apparmor=unconfined"]),
    "name the CLI refuses": _with_spec(name="../../etc"),
    "mtu out of range": _with_spec(mtu=70000),
    "port out of range": _with_spec(ports=[["0.0.0.0", 70000, 80, "tcp"]]),
    "port not normalized": _with_spec(ports=[["0.0.0.0", 8080, 80, "sctp"]]),
    "env not a pair": _with_spec(env=[["A"]]),
    "forwarded env outside MINIRUN_": encode({**_valid(), "env": {"LD_PRELOAD": "/tmp/x.so"}}),
    "unknown op": encode({"op": "exec", "env": {}}),
    "duplicate key": b'{"op": "sync", "env": {}, "env": {}}\n',
    "not JSON": b"sleep 4242\n",
    "JSON but not an object": b'["run"]\n',
    "data after the line": encode(_valid()) + b"more",
    "a huge line": b"x" * (3 << 20),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_request_the_cli_could_not_have_sent_is_refused(state_dir, supervisor, data):
    reply = send_raw(state_dir, data)
    assert reply["ok"] is False and reply["error"], reply
    nothing_started(state_dir)
    os.kill(supervisor, 0)


def test_an_idle_client_stalls_nobody(state_dir, supervisor):
    """A client that connects and sends nothing: `run -d` meanwhile is served at once (while the idle
    connection is still open, i.e. before its deadline), and the idle one then gets an error reply."""
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(str(state_dir / "supervisor.sock"))
    try:
        started = minirun("run", "-d", "sleep", "300")
        assert started.returncode == 0, started.stderr
        idle.setblocking(False)
        with pytest.raises(BlockingIOError):  # no reply and no EOF yet: the idle client still waits
            idle.recv(1)
        idle.settimeout(30)
        reply = json.loads(idle.recv(65536))
    finally:
        idle.close()
    assert not reply["ok"] and "no complete request line" in reply["error"]
    assert [r["owner"]["pid"] for r in records(state_dir)] == [supervisor, supervisor]


def test_dns_is_answered_while_a_client_sits_idle(state_dir):
    """The resolver shares the supervisor's loop: an idle client used to stall every user network's DNS."""
    assert minirun("network", "create", "app").returncode == 0
    for name in ("db", "web"):
        assert minirun("run", "-d", "--network", "app", "--name", name, "sleep", "300").returncode == 0
    db_address = minirun("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "db").stdout.strip()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(state_dir / "supervisor.sock"))
        lookup = minirun("exec", "web", PYTHON, "-c", "import socket; print(socket.gethostbyname('db'))")
        assert lookup.stdout.strip() == db_address, lookup.stderr
        idle.setblocking(False)
        with pytest.raises(BlockingIOError):  # answered while the idle client was still waiting
            idle.recv(1)


def test_a_client_gone_mid_request_does_not_hurt_the_supervisor(state_dir, supervisor):
    half = attack_request()[:40]
    for _ in range(3):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
            gone.connect(str(state_dir / "supervisor.sock"))
            gone.sendall(half)
    started = minirun("run", "-d", "sleep", "300")
    assert started.returncode == 0, started.stderr
    assert {r["owner"]["pid"] for r in records(state_dir)} == {supervisor}
    nothing_started(state_dir)


def test_a_flood_of_refused_clients_is_logged_in_few_lines(state_dir, supervisor):
    """Refusals are logged, but what an attacker makes the supervisor write stays small."""
    for _ in range(30):
        send_raw(state_dir, b"nonsense\n", "unshare", "--net")
    log = supervisor_log(state_dir)
    assert 0 < log.count("refused a client") <= 20, log
    os.kill(supervisor, 0)


def test_dns_is_answered_while_a_sync_waits_for_a_gateway(state_dir):
    """Review of hole 3: a "sync" request (every `run` on a user network sends one) slept in the
    supervisor's loop for up to 2 s while some network's gateway:53 could not be bound; meanwhile no DNS
    was answered on any network. The sync now waits on later rounds of the loop."""
    assert minirun("network", "create", "app").returncode == 0
    assert minirun("network", "create", "gone").returncode == 0
    for name in ("db", "web"):
        assert minirun("run", "-d", "--network", "app", "--name", name, "sleep", "300").returncode == 0
    db_address = minirun("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "db").stdout.strip()
    gateway = json.loads(minirun("network", "inspect", "app").stdout)["Gateway"]
    subprocess.run(["ip", "link", "delete", "mr-gone"], check=True)  # its gateway:53 cannot be bound now
    old = {r["owner"]["pid"] for r in records(state_dir)}.pop()
    os.kill(old, 9)  # the next supervisor finds network gone's gateway missing
    wait_for(lambda: not os.path.exists(f"/proc/{old}/stat") or _zombie(old), what="the old supervisor gone")
    # A new supervisor, which cannot bind network gone's gateway (this run's own sync waits for it).
    assert minirun("run", "-d", "--network", "app", "sleep", "300").returncode == 0
    wait_for(lambda: f"{gateway}:53 " in subprocess.run(["ss", "-uln"], capture_output=True, text=True).stdout,
             what="the new supervisor serving app")  # fmt: skip
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as syncing:
        syncing.connect(str(state_dir / "supervisor.sock"))
        syncing.sendall(protocol.encode(protocol.sync_request()))  # what `run --network app` sends first
        lookup = minirun("exec", "web", PYTHON, "-c", "import socket; print(socket.gethostbyname('db'))")
        assert lookup.stdout.strip() == db_address, lookup.stderr
        syncing.setblocking(False)
        with pytest.raises(BlockingIOError):  # answered while the sync was still waiting for its reply
            syncing.recv(1)
        syncing.setblocking(True)
        syncing.settimeout(10)
        assert json.loads(syncing.recv(100)) == {"ok": True}
    assert "port 53 is taken" in supervisor_log(state_dir)


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
