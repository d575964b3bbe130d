"""`minirun exec`: run a command inside a running container's namespaces, as `docker exec` and `nsenter` do.

setns(2) into the PID namespace only moves the caller's future children, so the launcher does what
fork_container does: switch pid_for_children, fork once, switch back. The child joins ipc, uts, net and
mnt itself (mnt last: it changes what /proc paths mean), then execs. The launcher waits, forwarding
signals, and returns the command's status (126/127 when it cannot be executed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from minirun.errors import EXIT_MINIRUN_FAILED, MinirunError
from minirun.kernel import syscalls as k
from minirun.runtime import child, gc, launch, lifecycle
from minirun.runtime.privileges import require_root

# Joined in this order by the child; "pid" is handled by the launcher (see the module docstring).
_JOINED = (("ipc", k.CLONE_NEWIPC), ("uts", k.CLONE_NEWUTS), ("net", k.CLONE_NEWNET), ("mnt", k.CLONE_NEWNS))


def exec_in(
    ref: str,
    command: tuple[str, ...],
    env: tuple[tuple[str, str], ...] = (),
    workdir: str | None = None,
    *,
    tty: bool = False,
    interactive: bool = False,
) -> int:
    require_root()
    gc.reconcile()
    try:
        record = lifecycle.find(ref)
    except MinirunError as exc:
        raise MinirunError(exc.msg, hint=exc.hint, code=EXIT_MINIRUN_FAILED) from None
    if not lifecycle.is_running(record):
        raise MinirunError(f"container {record.get('name')} is not running", hint="start a new one with 'minirun run'")
    pid = record["pid"]
    try:
        namespaces = [(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), flag) for name, flag in _JOINED]
        target_pidns = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MinirunError(f"container {record.get('name')} is not running") from None
    full_env = dict(item.split("=", 1) for item in record.get("env", []) if "=" in item)
    full_env.update(dict(env))
    cwd = workdir or record.get("workdir") or "/"

    pty = None
    if tty:
        from minirun.runtime.tty import Pty

        pty = Pty(interactive=interactive)
    error_in, error_out = os.pipe2(os.O_CLOEXEC)
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, *launch.FORWARDED_SIGNALS})  # see fork_container
    child_pid = -1
    try:
        k.setns(target_pidns, k.CLONE_NEWPID)
        child_pid = os.fork()
        if child_pid == 0:
            _child(namespaces, command, full_env, cwd, error_out, pty)
    finally:
        if child_pid != 0:
            k.setns(own_pidns, k.CLONE_NEWPID)
            for fd, _ in namespaces:
                os.close(fd)
            os.close(target_pidns)
            os.close(own_pidns)
    os.close(error_out)
    failure = os.read(error_in, 4096).decode(errors="replace")
    os.close(error_in)
    if failure:
        print(f"minirun: error: {launch.describe_failure(failure)}", file=sys.stderr)
    if pty is not None:
        pty.start()
    try:
        return launch.wait_forwarding_signals(child_pid, on_winch=pty.resize if pty else None)
    finally:
        if pty is not None:
            pty.finish()


def _child(namespaces, command, env, cwd, error_out, pty) -> None:
    """Never returns."""
    code = EXIT_MINIRUN_FAILED
    try:
        for fd, flag in namespaces:
            k.setns(fd, flag)
        child.exec_command(
            command,
            env,
            cwd,
            error_out,
            stdio=pty.child_stdio if pty else None,
            controlling_tty=pty is not None,
        )
    except BaseException as exc:  # noqa: BLE001 - a forked child must never unwind into the launcher's code
        with contextlib.suppress(Exception):
            code = child.report_failure(exc, error_out)
    os._exit(code)
