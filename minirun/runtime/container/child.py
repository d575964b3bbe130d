"""The container's first process, between fork and exec. Everything here runs in the child.

Order (nsjail's containProc, rubber-docker's contain): parent-death signal -> unshare -> hand the launcher a
netlink socket inside the new netns -> hostname -> mounts (the image's overlay and pivot_root, or the host's
tree; /proc, /sys, /dev, /etc files, masked paths) -> wait for "go" -> default signal state -> stdio (log
file or pty) -> close stray descriptors -> confine (bounding set, user, capabilities, no_new_privs,
seccomp last) -> chdir -> exec. Any failure is written to the error pipe and
the child exits 125; an exec failure exits 127 (not found) or 126 (not executable), as Docker's do.

pivot_root(2): https://man7.org/linux/man-pages/man2/pivot_root.2.html; no_new_privs:
https://docs.kernel.org/userspace-api/no_new_privs.html; PR_SET_PDEATHSIG:
https://man7.org/linux/man-pages/man2/prctl.2.html
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import select
import signal
import socket
import termios
from typing import NamedTuple

from minirun import paths
from minirun.errors import EXIT_MINIRUN_FAILED, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND
from minirun.kernel import nsfork
from minirun.kernel import syscalls as k

GO = b"g"
# The launcher's error pipe protocol: one line "<kind>:<detail>"; EOF with no data means exec succeeded.
EXEC_FAILED = "exec"
SETUP_FAILED = "setup"


class ChildConfig(NamedTuple):
    command: tuple[str, ...]
    env: dict[str, str]
    hostname: str
    workdir: str | None
    new_netns: bool
    # Descriptors that become the command's 0, 1, 2 (a log file, a pty); None: the launcher's own.
    stdio: tuple[int, int, int] | None = None
    # With a pty: a new session whose controlling terminal is stdio[0], so Ctrl-C reaches the command.
    controlling_tty: bool = False
    # Foreground containers die with their launcher; detached ones outlive it (the supervisor adopts them).
    die_with_parent: bool = True
    # A pod member joins the pod's pinned namespaces (nsfs paths with their CLONE_* type) instead of
    # creating those; its hostname then is the pod's.
    join: tuple[tuple[str, int], ...] = ()
    # The directory holding the container's (or its pod's) hostname, hosts and resolv.conf, bind-mounted
    # over /etc's.
    etc_dir: str | None = None
    # With --image: the overlay to pivot into (minirun.fs.rootfs.ImageRoot); None keeps the host's tree.
    image_root: object = None
    # Without --image: the container's directory (on the data root) that holds its private /tmp, /var/tmp
    # and /run.
    writable_dir: str | None = None
    # The launcher built the filesystem view (build_view) in a mount namespace the child is born in: a
    # member of a pod's shared PID namespace must never be there with the host's tree as its root.
    view_built: bool = False
    # minirun.security.SecurityProfile; None only in unit tests that exercise the bare mechanics.
    security: object = None
    # (uid, gid, supplementary gids) to switch to before exec; None stays root.
    user: tuple[int, int, tuple[int, ...]] | None = None


class ChildPipes(NamedTuple):
    netlink_out: socket.socket  # sends the in-netns rtnetlink socket to the launcher
    go_in: int
    error_out: int
    launcher_pidfd: int | None = None  # with die_with_parent: a pidfd of the launcher (see exec_command)


def main(cfg: ChildConfig, pipes: ChildPipes) -> None:
    """Never returns."""
    code = EXIT_MINIRUN_FAILED
    try:
        prepared = _setup(cfg, pipes)
        exec_command(
            cfg.command,
            cfg.env,
            cfg.workdir,
            pipes.error_out,
            stdio=cfg.stdio,
            controlling_tty=cfg.controlling_tty,
            security=cfg.security,
            user=cfg.user,
            prepared=prepared,
            launcher_pidfd=pipes.launcher_pidfd,
        )
    except BaseException as exc:  # noqa: BLE001 - a forked child must never unwind into the launcher's code
        code = report_failure(exc, pipes.error_out)
    os._exit(code)


def _setup(cfg: ChildConfig, pipes: ChildPipes):
    """Everything before "go"; returns the prepared seccomp filter (or None)."""
    # Until exec, /proc/PID/{root,cwd,fd,mem} of this process (root, every capability, the host's tree
    # at first) are closed to anyone without CAP_SYS_PTRACE (the runc exec race, CVE-2016-9962). exec
    # makes the command dumpable again.
    k.set_dumpable(False)
    if cfg.die_with_parent:
        # If the launcher dies (even by SIGKILL) the container dies with it, so the next `minirun` can
        # reclaim everything it owned: a foreground container does not outlive its `minirun run`.
        k.set_parent_death_signal(signal.SIGKILL)
    # Each pin is opened just before it is joined (a lazy generator) and closed right after.
    joined = nsfork.join_namespaces(((_namespace_fd(path), nstype) for path, nstype in cfg.join), close=True)
    flags = (k.CLONE_NEWUTS | k.CLONE_NEWIPC | (0 if cfg.view_built else k.CLONE_NEWNS)) & ~joined
    if cfg.new_netns:
        flags |= k.CLONE_NEWNET
    nsfork.enter_new_namespaces(flags)
    if cfg.new_netns:
        # IPv6 off for links created from now on (eth0), as Docker does when IPv6 is not enabled.
        _write_quietly("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
        nsfork.send_netlink(pipes.netlink_out)
    pipes.netlink_out.close()
    if not joined & k.CLONE_NEWUTS:
        k.sethostname(cfg.hostname)
    if not cfg.view_built:
        # Private propagation first: nothing we mount below may show up on the host.
        k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
        build_view(cfg)
    from minirun.fs import rootfs

    own_sysfs = cfg.image_root is not None or cfg.new_netns or bool(joined & k.CLONE_NEWNET)
    rootfs.finish_view(confined=_confined(cfg), own_sysfs=own_sysfs)
    prepared = None
    if cfg.security is not None:
        from minirun.security import prepare

        prepared = prepare(cfg.security)  # while the launcher attaches the network, not after "go"
    if os.read(pipes.go_in, 1) != GO:
        os._exit(0)  # the launcher gave up (its setup failed and rolled back): leave quietly
    os.close(pipes.go_in)
    return prepared


def _namespace_fd(path: str) -> int:
    """A pin's path, or an nsfs descriptor the launcher opened ("fd:N") when it built the view: the pins are
    out of sight from inside it."""
    return int(path[3:]) if path.startswith("fd:") else os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def build_view(cfg: ChildConfig) -> None:
    """The container's filesystem view, but /proc, /sys and the masks (rootfs.finish_view): in the child's
    new mount namespace, or, for a pod's shared PID namespace, in the launcher's (launch.fork_container)."""
    from minirun.fs import rootfs

    console = cfg.stdio[0] if cfg.controlling_tty and cfg.stdio else None
    if cfg.image_root is not None:
        rootfs.build_image_view(
            cfg.image_root, cfg.etc_dir, confined=_confined(cfg), console_fd=console, workdir=cfg.workdir
        )
    else:
        rootfs.build_host_view(
            cfg.etc_dir,
            confined=_confined(cfg),
            hidden=paths.hidden_from_containers(),
            writable_dir=cfg.writable_dir,
            console_fd=console,
        )


def _confined(cfg: ChildConfig) -> bool:
    return cfg.security is None or not cfg.security.privileged


def exec_command(
    command: tuple[str, ...],
    env: dict[str, str],
    workdir: str | None,
    error_out: int,
    *,
    stdio: tuple[int, int, int] | None = None,
    controlling_tty: bool = False,
    security=None,
    user: tuple[int, int, tuple[int, ...]] | None = None,
    prepared=None,
    launcher_pidfd: int | None = None,
) -> None:
    """The last steps before exec, shared by `run` and `exec`. Only returns by raising.

    Confinement comes last (capabilities, no_new_privs, seccomp: minirun.security.confine), so that
    everything before it may still use root's powers, and the working directory is entered as the user.
    With `launcher_pidfd` (a pidfd of the process that forked us) the command dies with that process.
    """
    reset_signals()
    reset_process_attributes()
    if stdio is not None:
        if controlling_tty:
            os.setsid()
            fcntl.ioctl(stdio[0], termios.TIOCSCTTY, 0)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
    _close_stray_fds(keep={0, 1, 2, error_out} | ({launcher_pidfd} if launcher_pidfd is not None else set()))
    if security is not None:
        from minirun.security import confine

        try:
            confine(security, user, prepared)
        except OSError as exc:
            raise _Failure(EXIT_MINIRUN_FAILED, f"cannot confine the command: {exc}") from None
    if workdir:
        try:
            os.chdir(workdir)
        except OSError as exc:
            message = f"cannot enter working directory {workdir}: {exc.strerror}"
            raise _Failure(EXIT_MINIRUN_FAILED, message) from None
    if launcher_pidfd is not None:
        _die_with_launcher(launcher_pidfd)
    try:
        os.execvpe(command[0], list(command), env)
    except OSError as exc:
        code = EXIT_NOT_FOUND if exc.errno in (errno.ENOENT, errno.ENOTDIR) else EXIT_NOT_EXECUTABLE
        raise _Failure(code, f"{exc.errno}:{command[0]}") from None


def _die_with_launcher(pidfd: int) -> None:
    """SIGKILL when the launcher dies, even by SIGKILL. Armed last: a change of user (confine) clears the
    parent-death signal (prctl(2), PR_SET_PDEATHSIG). A launcher that died before it was armed left no
    signal, but its pidfd reads as exited (pidfd_open(2)): then nobody waits for the command, so it never
    starts. (getppid() cannot tell: in the container's PID namespace our parent has no number.)"""
    k.set_parent_death_signal(signal.SIGKILL)
    if select.select([pidfd], [], [], 0)[0]:
        os._exit(EXIT_MINIRUN_FAILED)


# What a Docker container's process gets, whatever the caller's shell or the supervisor had (the supervisor
# raises its own open-file limit): umask 022 (runc's default), and at most 1024 open files, up to 524288 on
# request (setrlimit), as dockerd and containerd set since moby#45534: a higher soft limit makes programs that
# close every possible descriptor crawl (https://github.com/moby/moby/issues/38814).
CONTAINER_UMASK = 0o022
CONTAINER_NOFILE = (1024, 524288)


def reset_process_attributes() -> None:
    """The umask and open-file limit every container process starts with (run, run -d, exec alike). Raising
    the hard limit takes CAP_SYS_RESOURCE (this process has every capability root has: confinement comes
    later); where root lacks it (some sandboxes), the hard limit stays the one inherited."""
    os.umask(CONTAINER_UMASK)
    soft, hard = CONTAINER_NOFILE
    with open("/proc/sys/fs/nr_open") as f:  # the kernel's ceiling for any RLIMIT_NOFILE
        hard = min(hard, int(f.read()))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))
    except ValueError:  # EPERM: not allowed to raise the hard limit
        inherited = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        hard = inherited if inherited == resource.RLIM_INFINITY else min(hard, inherited)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))


def reset_signals() -> None:
    """Every signal at its default disposition, none blocked.

    An ignored disposition survives exec: Python ignores SIGPIPE and SIGXFSZ, and minirun itself may have
    been started under nohup. A container starts with every signal at its default, as under Docker.
    """
    for signum in signal.valid_signals():
        if signum not in (signal.SIGKILL, signal.SIGSTOP) and signal.getsignal(signum) == signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def report_failure(exc: BaseException, error_out: int) -> int:
    """Tell the launcher why we are exiting; return the exit status to use."""
    code = getattr(exc, "exit_code", EXIT_MINIRUN_FAILED)
    kind = EXEC_FAILED if code != EXIT_MINIRUN_FAILED else SETUP_FAILED
    with contextlib.suppress(OSError):  # the launcher is gone: nobody to tell
        os.write(error_out, f"{kind}:{exc}".encode()[:4000])
    return code


class _Failure(Exception):
    def __init__(self, exit_code: int, detail: str) -> None:
        super().__init__(detail)
        self.exit_code = exit_code


def _write_quietly(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        pass  # IPv6 compiled out: nothing to disable


def _close_stray_fds(keep: set[int]) -> None:
    """The command inherits stdin, stdout and stderr only (the error pipe is close-on-exec)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):  # the descriptor listdir itself used is already closed
                os.close(fd)
