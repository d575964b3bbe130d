"""`minirun exec`: run a command inside a running container's namespaces, as `docker exec` and `nsenter` do,
or inside a pod's shared namespaces, as `ip netns exec` does.

setns(2) into the PID namespace only moves the caller's future children, so the launcher does what
fork_container does (nsfork.PidNamespaceFork): switch pid_for_children, fork once, switch back. The child
joins ipc, uts and net itself (it is born in mnt: see exec_in), then execs. The launcher waits, forwarding
signals, and returns the command's status (126/127 when it cannot be executed).

Joining namespaces: https://man7.org/linux/man-pages/man2/setns.2.html; the race the fork order avoids:
https://nvd.nist.gov/vuln/detail/CVE-2016-9962
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any, NamedTuple

from minirun import paths
from minirun.errors import EXIT_MINIRUN_FAILED, MinirunError, NotFound
from minirun.fs import rootfs, users  # before the fork: inside an image minirun cannot import them
from minirun.kernel import nsfork
from minirun.kernel import syscalls as k
from minirun.runtime import model, query, reconcile, store
from minirun.runtime.container import child, launch
from minirun.runtime.privileges import require_root
from minirun.spec import DEFAULT_PATH

# Joined in this order by the child; "pid" is handled by the launcher (see the module docstring).
_CONTAINER_NAMESPACES = (
    ("ipc", k.CLONE_NEWIPC),
    ("uts", k.CLONE_NEWUTS),
    ("net", k.CLONE_NEWNET),
    ("mnt", k.CLONE_NEWNS),
)
_DEFAULT_ENV = {"PATH": DEFAULT_PATH, "HOME": "/root"}


class Target(NamedTuple):
    namespaces: tuple[tuple[str, int], ...]  # nsfs paths to setns() into, with their type
    pid_namespace: str | None  # joined through the launcher (for children), when there is one
    env: dict[str, str]
    workdir: str
    label: str
    security: dict | None = None  # the container's SecurityProfile record (None: the default profile)
    user: tuple[int, int, tuple[int, ...]] | None = None


def _target(ref: str) -> Target:
    try:
        record = query.find(ref)
    except NotFound:
        from minirun.runtime import pod as pods

        if store.load_pod(ref) is None:
            raise
        pod = store.find_pod(ref)
        env = {**_DEFAULT_ENV, "HOSTNAME": pod["hostname"]}
        return Target(pods.join_paths(pod), pods.pid_namespace(pod), env, "/", ref)
    if not model.is_running(record):
        raise MinirunError(f"container {record.get('name')} is not running", hint="start a new one with 'minirun run'")
    pid = record["pid"]
    env = dict(item.split("=", 1) for item in record.get("env", []) if "=" in item)
    namespaces = tuple((f"/proc/{pid}/ns/{name}", flag) for name, flag in _CONTAINER_NAMESPACES)
    user = record.get("user")
    return Target(
        namespaces,
        f"/proc/{pid}/ns/pid",
        env,
        record.get("workdir") or "/",
        record.get("name") or record["id"],  # a rebuilt record may not know it
        record.get("security"),
        (user[0], user[1], tuple(user[2])) if user else None,
    )


def exec_in(
    ref: str,
    command: tuple[str, ...],
    env: tuple[tuple[str, str], ...] = (),
    workdir: str | None = None,
    *,
    tty: bool = False,
    interactive: bool = False,
    user: str | None = None,
    privileged: bool = False,
) -> int:
    """Like `docker exec`: the command gets the container's confinement (its capabilities, no_new_privs,
    seccomp) and user, unless --privileged or --user say otherwise."""
    require_root()
    reconcile.reconcile()
    try:
        target = _target(ref)
    except MinirunError as exc:
        raise MinirunError(exc.msg, hint=exc.hint, code=EXIT_MINIRUN_FAILED) from None
    namespaces, pidns = _open_namespaces(target)
    from minirun.security import SecurityProfile, profile_from_options

    security = profile_from_options(privileged=True) if privileged else SecurityProfile.from_record(target.security)
    pty = None
    if tty:
        from minirun.runtime.tty import Pty

        pty = Pty(interactive=interactive)
    error_in, error_out = os.pipe2(os.O_CLOEXEC)
    command_line = (command, {**target.env, **dict(env)}, workdir or target.workdir)
    child_pid = _fork_command(namespaces, pidns, command_line, Identity(security, target.user, user), pty, error_out)
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


def _open_namespaces(target: Target) -> tuple[list[tuple[int, int]], int | None]:
    try:
        namespaces = [(os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag) for path, flag in target.namespaces]
        pidns = os.open(target.pid_namespace, os.O_RDONLY | os.O_CLOEXEC) if target.pid_namespace else None
    except FileNotFoundError:
        raise MinirunError(f"{target.label} is not running") from None
    return namespaces, pidns


def _entering_view(namespaces: list[tuple[int, int]], identity: Identity, pty) -> Any:
    """The mount namespace the command is born in: the container's, or for a pod a new one whose view this
    process builds first (the pod has no root of its own)."""
    container_mnt = next((fd for fd, flag in namespaces if flag == k.CLONE_NEWNS), None)
    if container_mnt is not None:
        return nsfork.entering_mount_namespace(container_mnt)
    return launch.entering_new_view(
        lambda: rootfs.build_host_view(
            None,
            confined=not identity.security.privileged,
            hidden=paths.hidden_from_containers(),
            writable_dir=None,  # size-capped tmpfs: this process has no directory of its own on disk
            console_fd=pty.child_stdio[0] if pty else None,
        )
    )


def _fork_command(
    namespaces: list[tuple[int, int]],
    pidns: int | None,
    command_line: tuple[tuple[str, ...], dict[str, str], str],
    identity: Identity,
    pty,
    error_out: int,
) -> int:
    """Fork the command into the target's namespaces; its pid. Closes the namespace fds."""
    pid_fork = nsfork.PidNamespaceFork(pidns)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, *launch.FORWARDED_SIGNALS})  # see fork_container
    # The command is born in its final mount namespace (the container's, or for a pod a new one whose view
    # this process builds first): forked after this process entered it, so at no moment does a process of
    # the container's PID namespace have the host's tree as its root (one allowed to ptrace, --cap-add
    # SYS_PTRACE, could otherwise reach it through /proc/PID/root: the runc exec race, CVE-2016-9962).
    # This process goes straight back to its own mount namespace after the fork.
    fresh_view = not any(flag == k.CLONE_NEWNS for _, flag in namespaces)
    view = _entering_view(namespaces, identity, pty)
    child_pid = -1
    # The command dies with this process (kill -9 too): nobody would wait for it or forward signals to it.
    launcher = os.pidfd_open(os.getpid())  # close-on-exec, as every pidfd
    try:
        # A pod that does not share a PID namespace (pidns None): the command gets one of its own (as a member
        # does), never the host's, where /proc would list, and CAP_KILL reach, every host process.
        # pid_fork first: it opens /proc/self/ns/pid while /proc is still ours; the way out leaves the view first.
        with pid_fork, view:
            child_pid = pid_fork.fork()
            if child_pid == 0:
                command, env, cwd = command_line
                _child(namespaces, fresh_view, command, env, cwd, error_out, pty, identity, launcher)
    finally:
        if child_pid != 0:
            os.close(launcher)
            for fd, _ in namespaces:
                os.close(fd)
            if pidns is not None:
                os.close(pidns)
    return child_pid


class Identity(NamedTuple):
    security: object  # minirun.security.SecurityProfile
    user: tuple[int, int, tuple[int, ...]] | None  # the container's
    requested: str | None  # exec --user, resolved inside the container's mount namespace


def _child(namespaces, fresh_view, command, env, cwd, error_out, pty, identity: Identity, launcher: int) -> None:
    """Never returns."""
    code = EXIT_MINIRUN_FAILED
    try:
        k.set_dumpable(False)  # see child._setup: nobody but CAP_SYS_PTRACE may look into us before exec
        nsfork.join_namespaces((fd, flag) for fd, flag in namespaces if flag != k.CLONE_NEWNS)  # born in mnt
        if fresh_view:
            # A pod's (see exec_in): /proc of the PID namespace it is in, /sys of the pod's netns, the masks.
            rootfs.finish_view(confined=not identity.security.privileged, own_sysfs=True)
        user = identity.user
        if identity.requested or user is None:
            # setns(mnt) made the container's root ours (a pod's: the host's); root's groups come from there too
            resolved = users.resolve(identity.requested or "0", "/")
            user = resolved.ids()
            if identity.requested:
                env = {**env, "HOME": resolved.home}
        child.exec_command(
            command,
            env,
            cwd,
            error_out,
            stdio=pty.child_stdio if pty else None,
            controlling_tty=pty is not None,
            security=identity.security,
            user=user,
            launcher_pidfd=launcher,
        )
    except BaseException as exc:  # noqa: BLE001 - a forked child must never unwind into the launcher's code
        with contextlib.suppress(Exception):
            code = child.report_failure(exc, error_out)
    os._exit(code)
