"""The container process: namespaces, PID 1, stdio, descriptors, signals, exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.integration.conftest import PYTHON, minirun, records, spawn, wait_running

PYTHON_OF_VENV = sys.executable


def test_command_is_pid_1_with_its_own_proc():
    result = minirun("run", "--network", "none", "sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'")
    assert result.returncode == 0, result.stderr
    pid, visible = result.stdout.split()
    assert pid == "1"
    assert int(visible) <= 3  # sh, the pipeline's ls and grep: nothing of the host


def test_new_namespaces_differ_from_host():
    script = "for n in net uts ipc pid mnt; do readlink /proc/self/ns/$n; done"
    inside = minirun("run", "sh", "-c", script).stdout.split()
    outside = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout.split()
    assert len(inside) == 5
    for a, b in zip(inside, outside, strict=True):
        assert a != b


def test_host_network_keeps_the_host_netns():
    inside = minirun("run", "--network", "host", "readlink", "/proc/self/ns/net").stdout.strip()
    assert inside == os.readlink("/proc/self/ns/net")


def test_stdout_and_stderr_stay_separate_and_stdin_passes_through():
    result = minirun("run", "--network", "none", "sh", "-c", "cat; echo out; echo err >&2", input="hello\n")
    assert result.returncode == 0
    assert result.stdout == "hello\nout\n"
    assert result.stderr == "err\n"


def test_only_stdio_is_inherited():
    extra_r, extra_w = os.pipe()
    os.set_inheritable(extra_w, True)
    try:
        result = minirun(
            "run",
            "--network",
            "none",
            PYTHON,
            "-c",
            "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))",
            pass_fds=(extra_w,),
        )
    finally:
        os.close(extra_r)
        os.close(extra_w)
    fds = eval(result.stdout)  # noqa: S307 - our own printed list
    assert fds[:3] == [0, 1, 2]
    assert len(fds) == 4  # the fourth is the one listdir() itself opened
    assert extra_w not in fds[:3]


def test_default_signal_state():
    # started the way nohup starts things: SIGHUP ignored, plus a blocked signal, in minirun itself
    def ignore_hup_block_usr1():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})

    result = minirun(
        "run",
        "--network",
        "none",
        "sh",
        "-c",
        "grep -E '^Sig(Ign|Blk)' /proc/self/status",
        preexec_fn=ignore_hup_block_usr1,
    )
    fields = dict(line.split(":\t") for line in result.stdout.strip().splitlines())
    assert fields == {"SigBlk": "0000000000000000", "SigIgn": "0000000000000000"}
    # SIGPIPE must kill `yes` as it does outside Python: the pipeline ends quickly and quietly.
    pipe = minirun("run", "--network", "none", "sh", "-c", "yes | head -n 2", timeout=20)
    assert pipe.stdout == "y\ny\n"
    assert pipe.stderr == ""


def test_umask_and_open_file_limit_are_dockers_however_minirun_was_started(state_dir):
    """Issue 15: a container gets nothing from the caller or the supervisor. Started from a shell with umask
    077 and 64 open files at most (the supervisor it starts raises its own limit), a foreground and a
    detached container, and an exec into one, all get umask 0022 and 1024 (soft) / 524288 (hard) open
    files, Docker's since moby#45534."""
    import resource

    def constrained() -> None:
        os.umask(0o077)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 4096))

    show = "umask; grep 'open files' /proc/self/limits"
    with open("/proc/self/status") as f:
        effective = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
    can_raise = bool(effective & (1 << 24))  # CAP_SYS_RESOURCE: without it the caller's hard limit stays
    expected = ["0022", "Max", "open", "files", "1024", "524288" if can_raise else "4096", "files"]

    def run(*args: str) -> list[str]:
        result = subprocess.run(
            [sys.executable, "-m", "minirun", *args], capture_output=True, text=True, preexec_fn=constrained
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert run("run", "--rm", "sh", "-c", show) == expected
    assert run("run", "-d", "--name", "limits", "sleep", "300")
    assert run("exec", "limits", "sh", "-c", show) == expected
    detached = run("run", "-d", "sh", "-c", show)[0]
    assert minirun("wait", detached).stdout.split() == ["0"]
    assert minirun("logs", detached).stdout.split() == expected
    assert minirun("rm", "-f", "limits", detached).returncode == 0


def test_exit_code_matrix():
    # Host paths the container sees (read-only): the test's own tmp_path is under /tmp, which is private.
    cases = [
        (["true"], 0),
        (["sh", "-c", "exit 7"], 7),
        (["no-such-command-xyz"], 127),
        (["/no/such/path"], 127),
        (["/etc"], 126),
        (["/etc/passwd"], 126),
    ]
    for command, expected in cases:
        result = minirun("run", "--network", "none", *command)
        assert result.returncode == expected, (command, result.stderr)
    assert (
        'exec: "no-such-command-xyz": executable file not found in $PATH'
        in minirun("run", "no-such-command-xyz").stderr
    )


def test_killed_by_signal_is_128_plus_n(state_dir):
    proc = spawn("run", "--network", "none", "sleep", "30")
    (record,) = wait_running(state_dir)
    os.kill(record["pid"], signal.SIGKILL)
    assert proc.wait(timeout=10) == 128 + signal.SIGKILL


def test_signals_are_forwarded_to_pid_1(state_dir):
    for signum, code in (
        (signal.SIGTERM, 43),
        (signal.SIGUSR1, 44),
        (signal.SIGHUP, 45),
        (signal.SIGINT, 46),
        (signal.SIGQUIT, 47),
        (signal.SIGUSR2, 48),
    ):
        name = signal.Signals(signum).name[3:]
        proc = spawn(
            "run",
            "--network",
            "none",
            "sh",
            "-c",
            f"trap 'exit {code}' {name}; echo ready; while :; do sleep 0.05; done",
        )
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == code, proc.stderr.read()


def test_pid_1_without_handler_ignores_forwarded_term(state_dir):
    proc = spawn("run", "--network", "none", "sleep", "30")
    (record,) = wait_running(state_dir)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=0.5)
        raise AssertionError("PID 1 without a TERM handler must not die of a forwarded SIGTERM")
    except subprocess.TimeoutExpired:
        pass
    os.kill(record["pid"], signal.SIGKILL)
    assert proc.wait(timeout=10) == 137


def test_hostname_defaults_to_container_id_and_can_be_set(state_dir):
    proc = spawn("run", "--network", "none", "sh", "-c", "hostname; exec sleep 30")
    hostname = proc.stdout.readline().strip()
    (record,) = wait_running(state_dir)
    assert hostname == record["id"] and len(hostname) == 12 and int(hostname, 16) >= 0
    os.kill(record["pid"], signal.SIGKILL)
    proc.wait(timeout=10)
    assert minirun("run", "--hostname", "web-1.example", "hostname").stdout == "web-1.example\n"
    assert os.uname().nodename != "web-1.example"


def test_env_and_workdir():
    result = minirun(
        "run",
        "--network",
        "none",
        "-e",
        "FOO=bar",
        "--env=EMPTY=",
        "-e",
        "FROM_HOST",
        "-w",
        "/usr/share",
        "sh",
        "-c",
        "echo $FOO/$EMPTY/$FROM_HOST/$HOME/$PATH; pwd",
        env={"FROM_HOST": "copied"},
    )
    first, second = result.stdout.splitlines()
    assert first == "bar//copied//root//usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert second == "/usr/share"


def test_mounts_stay_inside(tmp_path):
    target = tmp_path / "mnt"
    target.mkdir()
    result = minirun(
        "run",
        "--privileged",
        "--network",
        "none",
        "sh",
        "-c",
        f"mount -t tmpfs none {target} && grep -c {target} /proc/self/mounts",
    )
    assert result.returncode == 0 and result.stdout.strip() == "1"
    with open("/proc/self/mounts") as f:
        assert str(target) not in f.read()


def test_record_is_removed_after_run(state_dir):
    assert minirun("run", "--name", "once", "true").returncode == 0
    assert records(state_dir) == []
    assert minirun("run", "--name", "once", "true").returncode == 0  # the name is free again


@pytest.mark.parametrize(
    "args",
    [["--help"], ["run", "--help"], ["version"], ["run", "--network", "none", "--bogus", "true"]],
)
def test_commands_without_netlink_do_not_import_pyroute2(args):
    """pyroute2's package costs 90-175 ms to import: only paths that talk netlink may load (part of) it."""
    result = subprocess.run(
        [PYTHON_OF_VENV, "-X", "importtime", "-m", "minirun", *args], capture_output=True, text=True
    )
    assert "minirun.cli" in result.stderr  # the importtime report is there
    assert "pyroute2" not in result.stderr
    if args[0] == "run":
        assert "typer" not in result.stderr  # `run` is parsed without typer
