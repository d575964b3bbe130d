"""Detached containers and the Docker verbs, against real containers in the sandbox host namespace."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from tests.integration.conftest import (
    CLIENT,
    LISTENER,
    PYTHON,
    host_links,
    ipam_reservations,
    minirun,
    process_states,
    records,
    wait_for,
)

ID = re.compile(r"^[0-9a-f]{12}$")


def detach(*args: str, env: dict | None = None) -> str:
    result = minirun("run", "-d", *args, env=env)
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    assert ID.match(container_id), result.stdout
    return container_id


def inspect(ref: str) -> dict:
    result = minirun("inspect", ref)
    assert result.returncode == 0, result.stderr
    (document,) = json.loads(result.stdout)
    return document


def wait_exited(ref: str, timeout: float = 10) -> dict:
    return wait_for(lambda: (d := inspect(ref))["State"]["Status"] == "exited" and d, timeout, what=f"{ref} exited")


def remove_all() -> None:
    ids = minirun("ps", "-a", "-q").stdout.split()
    if ids:
        assert minirun("rm", "-f", *ids).returncode == 0


@pytest.fixture(autouse=True)
def _clean_up(clean_slate):
    yield


def test_detached_server_keeps_serving_and_is_reachable_over_the_bridge():
    started = time.monotonic()
    container_id = detach("--name", "web", PYTHON, "-c", LISTENER, "8080", "20")
    assert time.monotonic() - started < 5  # returned at once, the server still runs
    document = inspect("web")
    assert document["Id"] == container_id and document["Name"] == "/web"
    assert document["State"]["Running"] and document["State"]["Pid"] > 0
    address = document["NetworkSettings"]["IPAddress"]
    assert address.startswith("10.77.") and document["NetworkSettings"]["IPPrefixLen"] == 16
    assert document["NetworkSettings"]["Gateway"] == "10.77.0.1"
    assert re.match(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$", document["NetworkSettings"]["MacAddress"])
    assert document["NetworkSettings"]["SandboxKey"] == f"/proc/{document['State']['Pid']}/ns/net"
    wait_for(lambda: "listening" in minirun("logs", "web").stdout, what="server listening")
    # nsenter with the SandboxKey sees the same eth0 address: the path is usable from the host
    seen = subprocess.run(
        ["nsenter", f"--net={document['NetworkSettings']['SandboxKey']}", "ip", "-4", "-o", "addr", "show", "eth0"],
        capture_output=True,
        text=True,
    ).stdout
    assert f"{address}/16" in seen
    client = minirun("run", "--rm", PYTHON, "-c", CLIENT, address, "8080", "5")
    assert client.stdout.strip() == "pong", client.stderr
    final = wait_exited("web")
    assert final["State"]["ExitCode"] == 0
    assert "listening" in minirun("logs", "web").stdout


def test_exit_code_recorded_after_the_fact():
    detach("--name", "seven", "sh", "-c", "echo out; echo err >&2; exit 7")
    document = wait_exited("seven")
    assert document["State"]["ExitCode"] == 7 and not document["State"]["Running"]
    assert document["State"]["FinishedAt"] >= document["State"]["StartedAt"]
    listing = minirun("ps", "-a").stdout
    assert re.search(r"seven .*Exited \(7\) .* ago", listing), listing
    assert "seven" not in minirun("ps").stdout  # only running ones without -a
    assert minirun("logs", "seven").stdout == "out\nerr\n"
    # the address went back at exit, the record stays until rm
    assert ipam_reservations(records_dir()) == []


def container_files(container_id: str) -> list:
    """The container's directory on the data root (its log, /etc files, upper dir), if any is left."""
    data_root = __import__("pathlib").Path(os.environ["MINIRUN_DATA_DIR"])
    return list(data_root.glob(f"rw/*/containers/{container_id}"))


def records_dir():
    return __import__("pathlib").Path(os.environ["MINIRUN_STATE_DIR"])


def test_rm_flag_with_detach_leaves_nothing(state_dir):
    container_id = detach("--rm", "sh", "-c", "sleep 0.2")
    wait_for(lambda: records(state_dir) == [], what="record removed")
    assert not container_files(container_id)
    assert minirun("ps", "-a", "-q").stdout == ""


def test_stop_honours_the_grace_period_and_yields_137():
    detach("--name", "stubborn", "sleep", "30")
    started = time.monotonic()
    result = minirun("stop", "-t", "1", "stubborn")
    elapsed = time.monotonic() - started
    assert result.returncode == 0 and result.stdout == "stubborn\n"
    assert 1.0 <= elapsed < 6.0  # the grace period, then SIGKILL
    assert inspect("stubborn")["State"]["ExitCode"] == 137
    assert minirun("stop", "stubborn").returncode == 0  # stopping a stopped container is fine


def test_stop_with_a_term_handler_is_quick():
    detach("--name", "polite", "sh", "-c", "trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done")
    wait_for(lambda: "ready\n" in minirun("logs", "polite").stdout, what="trap set")  # else TERM kills sh: 143
    started = time.monotonic()
    assert minirun("stop", "polite").returncode == 0
    assert time.monotonic() - started < 5
    assert inspect("polite")["State"]["ExitCode"] == 3


def test_kill_delivers_named_and_numbered_signals():
    detach(
        "--name",
        "sig",
        "sh",
        "-c",
        "trap 'echo got-usr1' USR1; trap 'echo got-usr2' USR2; echo ready; while :; do sleep 0.05; done",
    )
    # the traps are set once "ready" is logged (a bare sleep raced them: an early USR1 kills the shell)
    wait_for(lambda: "ready\n" in minirun("logs", "sig").stdout, what="traps set")
    assert minirun("kill", "-s", "USR1", "sig").returncode == 0
    assert minirun("kill", "--signal", str(int(signal.SIGUSR2)), "sig").returncode == 0
    wait_for(lambda: "got-usr1\ngot-usr2\n" in minirun("logs", "sig").stdout, what="both signals handled")
    bad = minirun("kill", "-s", "NOPE", "sig")
    assert bad.returncode == 1 and 'invalid signal "NOPE"' in bad.stderr
    assert minirun("kill", "sig").returncode == 0  # SIGKILL by default
    assert wait_exited("sig")["State"]["ExitCode"] == 137


def test_logs_tail_and_follow():
    detach("--name", "talker", "sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.1; done")
    follow = subprocess.run([*minirun_cmd(), "logs", "-f", "talker"], capture_output=True, text=True, timeout=20)
    assert follow.stdout == "".join(f"line {i}\n" for i in range(1, 6))  # -f returned once it exited
    assert minirun("logs", "--tail", "2", "talker").stdout == "line 4\nline 5\n"


def minirun_cmd() -> list[str]:
    from tests.integration.conftest import MINIRUN

    return [MINIRUN]


def test_exec_joins_every_namespace():
    detach("--name", "box", "sleep", "30")
    pid = inspect("box")["State"]["Pid"]
    inside = minirun("exec", "box", "sh", "-c", "for n in net uts ipc pid mnt; do readlink /proc/self/ns/$n; done")
    assert inside.returncode == 0, inside.stderr
    expected = [os.readlink(f"/proc/{pid}/ns/{n}") for n in ("net", "uts", "ipc", "pid", "mnt")]
    assert inside.stdout.split() == expected
    processes = minirun("exec", "box", "sh", "-c", "ls /proc | grep -E '^[0-9]+$'").stdout.split()
    assert "1" in processes and len(processes) <= 4  # sleep as PID 1, our sh, ls, grep
    same = minirun("exec", "-e", "X=1", "-w", "/tmp", "box", "sh", "-c", "echo $X $(pwd) $(hostname)")
    assert same.stdout.split() == ["1", "/tmp", inspect("box")["Config"]["Hostname"]]
    assert minirun("exec", "box", "sh", "-c", "exit 9").returncode == 9
    assert minirun("exec", "box", "no-such-cmd").returncode == 127
    assert minirun("exec", "box", "/tmp").returncode == 126


def test_exec_into_a_container_that_is_not_running():
    detach("--name", "gone", "true")
    wait_exited("gone")
    result = minirun("exec", "gone", "true")
    assert result.returncode == 125 and "container gone is not running" in result.stderr
    missing = minirun("exec", "nosuch", "true")
    assert missing.returncode == 125 and "no such container: nosuch" in missing.stderr


def _pty_session(args: list[str], script: list, rows: int = 33, cols: int = 77, timeout: float = 15):
    """Run minirun under a pty of the given size and type `script` into it: each step is bytes sent at the
    next shell prompt, or (bytes, seconds) sent that long after the previous step. Returns (status, screen)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(
        [*minirun_cmd(), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    shown, mark, last_sent = b"", 0, time.monotonic()
    deadline = time.monotonic() + timeout
    pending = list(script)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: minirun closed the terminal
                break
            if not data:
                break
            shown += data
        if pending:
            step = pending[0]
            due = (
                (time.monotonic() - last_sent >= step[1])
                if isinstance(step, tuple)
                else (b"# " in shown[mark:] or b"$ " in shown[mark:])
            )
            if due:
                os.write(master, step[0] if isinstance(step, tuple) else step)
                pending.pop(0)
                mark, last_sent = len(shown), time.monotonic()
    os.close(master)
    return proc.wait(timeout=10), shown.decode(errors="replace")


def test_run_it_gives_a_real_terminal_with_window_size_and_ctrl_c():
    code, shown = _pty_session(
        ["run", "-it", "--network", "none", "sh"],
        [b"stty size; tty\n", b"sleep 30\n", (b"\x03", 0.5), b"echo $((6*7)); exit 3\n"],
    )
    assert code == 3, shown
    # The pty is the launcher's, from the host's devpts, which the container's own /dev does not show: it
    # is bound on /dev/console (as Docker's -t), the name `tty` finds for it.
    assert "33 77" in shown and "/dev/console" in shown
    assert "42" in shown
    assert "^C" in shown  # Ctrl-C interrupted `sleep 30` inside the container, the shell went on


def test_exec_it_into_a_detached_container():
    detach("--name", "shellbox", "sleep", "30")
    code, shown = _pty_session(
        ["exec", "-it", "shellbox", "sh"], [b"hostname; stty size\n", b"exit 4\n"], rows=20, cols=100
    )
    assert code == 4, shown
    assert inspect("shellbox")["Config"]["Hostname"] in shown and "20 100" in shown


def _zombies(ref: str) -> int:
    return sum(1 for _, state in process_states(ref) if state == "Z")


def test_init_reaps_zombies_and_keeps_the_exit_code():
    """Waits for conditions, not a bare sleep(0.6): the orphan must turn into a zombie without an init, and
    be gone (not a zombie "sleep") with one; an init that does not reap times out the second wait."""
    # `(sleep 0.1 &)` orphans a child; `exec sleep` makes PID 1 a process that never reaps it.
    command = ["sh", "-c", "(sleep 0.1 &); exec sleep 30"]
    detach("--name", "noinit", *command)
    detach("--name", "withinit", "--init", *command)
    wait_for(lambda: _zombies("noinit") == 1, what="the negative control: without an init the zombie stays")
    wait_for(
        lambda: [name for name, _ in process_states("withinit")].count("sleep") == 1,
        what="the orphan reaped by the init: one sleep left",
    )
    assert _zombies("withinit") == 0
    assert inspect("withinit")["HostConfig"]["Init"] is True
    code = minirun("run", "--init", "--network", "none", "sh", "-c", "exit 5")
    assert code.returncode == 5
    assert minirun("run", "--init", "--network", "none", "no-such-cmd").returncode == 127


def test_rm_refuses_a_running_container_unless_forced(state_dir):
    container_id = detach("--name", "busy", "sleep", "30")
    refused = minirun("rm", "busy")
    assert refused.returncode == 1 and "cannot remove running container busy" in refused.stderr
    assert "rm -f" in refused.stderr
    assert container_files(container_id)  # its directory on the data root, until rm
    forced = minirun("rm", "-f", "busy")
    assert forced.returncode == 0 and forced.stdout == "busy\n"
    assert records(state_dir) == [] and not container_files(container_id)
    assert minirun("rm", "busy").returncode == 1  # gone now: "no such container"


def test_kill_9_of_the_supervisor_is_reconciled(state_dir):
    detach("--name", "orphan", "sh", "-c", "sleep 0.5")
    (record,) = records(state_dir)
    os.kill(record["owner"]["pid"], signal.SIGKILL)  # the supervisor
    wait_for(lambda: not os.path.exists(f"/proc/{record['pid']}"), what="container ended on its own")
    listing = minirun("ps", "-a")
    assert re.search(r"orphan .*Exited \(255\)", listing.stdout), listing.stdout
    assert ipam_reservations(state_dir) == []
    wait_for(lambda: record["network"]["host_veth"] not in host_links(), what="veth gone")


def test_unknown_and_ambiguous_references():
    missing = minirun("stop", "nosuch")
    assert missing.returncode == 1 and "no such container: nosuch" in missing.stderr
    ids = [detach("--rm", "sleep", "30") for _ in range(17)]  # 17 ids: two share a first hex digit
    firsts = [i[0] for i in ids]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    ambiguous = minirun("inspect", shared)
    assert ambiguous.returncode == 1 and "matches several containers" in ambiguous.stderr
    assert inspect(ids[0][:8])["Id"] == ids[0]  # a longer prefix is unique (or the id itself is)


def test_fifty_detached_containers_listed_then_removed(state_dir):
    ids = [detach("sleep", "60") for _ in range(50)]
    listed = minirun("ps", "-q").stdout.split()
    assert sorted(listed) == sorted(ids)
    addresses = {inspect(i)["NetworkSettings"]["IPAddress"] for i in ids[:5]}
    assert len(addresses) == 5
    rows = [json.loads(line) for line in minirun("ps", "--format", "json").stdout.splitlines()]
    assert len(rows) == 50 and all(row["Status"].startswith("Up") for row in rows)
    removed = minirun("rm", "-f", *ids, timeout=300)
    assert removed.returncode == 0 and removed.stdout.split() == ids
    assert records(state_dir) == [] and ipam_reservations(state_dir) == []


def test_run_it_with_an_image(busybox_image):
    """The pty is the command's terminal and the image's /dev/console, as with `docker run -it`."""
    code, shown = _pty_session(
        ["run", "--rm", "-it", "--image", busybox_image],  # the image's Cmd: sh
        [b"stty size; ls -l /dev/console; test -e /etc/os-release || echo image-root\n", b"exit 5\n"],
    )
    assert code == 5, shown
    assert "33 77" in shown and "image-root" in shown and "/dev/console" in shown
