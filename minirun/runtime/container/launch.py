"""Process mechanics shared by `run` and `exec`: fork into new namespaces, release the child to exec,
learn whether exec worked, forward signals and wait.

PID 1 of a PID namespace and the signals it gets: https://man7.org/linux/man-pages/man7/pid_namespaces.7.html;
the exec race the fork order avoids: https://nvd.nist.gov/vuln/detail/CVE-2016-9962
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
from collections.abc import Callable

from minirun.errors import EXIT_MINIRUN_FAILED, MinirunError
from minirun.kernel import nsfork
from minirun.kernel.proc import exit_status
from minirun.runtime.container import child

# Signals `minirun` passes on to the container's PID 1 (which, as in Docker, ignores those it has no
# handler for).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
SI_KERNEL = 0x80  # si_code of signals the tty driver generates (Ctrl-C): PID 1 got those itself


class Launch:
    """The launcher's handles on a freshly forked container process."""

    __slots__ = ("pid", "netlink", "go_out", "error_in")

    def __init__(self, pid: int, go_out: int, error_in: int) -> None:
        self.pid = pid
        self.netlink: socket.socket | None = None
        self.go_out = go_out
        self.error_in = error_in

    def abort(self) -> None:
        """Undo of the fork: the child dies and is reaped, its namespaces with it."""
        with contextlib.suppress(OSError):
            os.close(self.go_out)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.close_netns_handles()
        with contextlib.suppress(OSError):
            os.close(self.error_in)

    def close_netns_handles(self) -> None:
        # A socket or fd in the container's netns keeps it (and the veth) alive after the container ends.
        if self.netlink is not None:
            self.netlink.close()
            self.netlink = None

    def release(self) -> str:
        """Let the child exec. Returns '' when exec succeeded, else the child's failure report."""
        with contextlib.suppress(BrokenPipeError):  # the child failed before "go": its report says why
            os.write(self.go_out, child.GO)
        os.close(self.go_out)
        failure = os.read(self.error_in, 4096).decode(errors="replace")
        os.close(self.error_in)
        return failure


def fork_container(cfg: child.ChildConfig, pid_namespace: str | None = None) -> Launch:
    """Fork the container's first process as PID 1 of a new PID namespace; it unshares the rest itself.

    The launcher forks once into the new PID namespace and stays in its own (nsfork.PidNamespaceFork): later
    forks (nft) stay on the host. With `pid_namespace` (a pod sharing its PID namespace) the child joins that
    one instead, in the same way, and is born in a mount namespace whose view the launcher built first
    (nsfork.entering_new_mount_namespace): in a PID namespace shared with other containers, one allowed to
    ptrace must never find a process whose /proc/PID/root is the host's tree (the runc exec race,
    CVE-2016-9962).
    """
    build_first = pid_namespace is not None
    join_fds: list[int] = []
    if build_first:
        cfg, join_fds = _joining_through_fds(cfg)
    netlink_parent, netlink_child = nsfork.socket_channel()
    go_in, go_out = os.pipe2(os.O_CLOEXEC)
    error_in, error_out = os.pipe2(os.O_CLOEXEC)
    # A foreground container dies with its launcher; switching to --user clears the parent-death signal set
    # early, so the child re-arms it after the switch, checking this pidfd for a launcher already gone.
    launcher = os.pidfd_open(os.getpid()) if cfg.die_with_parent else None
    pidns = nsfork.PidNamespaceFork(os.open(pid_namespace, os.O_RDONLY | os.O_CLOEXEC) if pid_namespace else None)
    # SIGCHLD stays blocked from before the fork, so an early exit is never missed by sigwaitinfo(); the
    # forwarded signals too, so one that arrives while the network is set up is held and passed on to the
    # container once it runs, instead of killing the launcher half-way. (The child unblocks all before exec.)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, *FORWARDED_SIGNALS})
    view = entering_new_view(lambda: child.build_view(cfg)) if build_first else contextlib.nullcontext()
    pid = -1
    try:
        # pidns first: it opens /proc/self/ns/pid while /proc is still ours; the way out leaves the view first.
        with pidns, view:
            pid = pidns.fork()
            if pid == 0:
                netlink_parent.close()
                os.close(go_out)
                os.close(error_in)
                child.main(cfg, child.ChildPipes(netlink_child, go_in, error_out, launcher))
    except BaseException:
        if pid == -1:  # nothing forked: nobody else holds these
            netlink_parent.close()
            for fd in (go_out, error_in):
                os.close(fd)
        raise
    finally:
        if pid != 0:
            if launcher is not None:
                os.close(launcher)
            for fd in join_fds:
                os.close(fd)
            if pidns.target is not None:
                os.close(pidns.target)
            if pid == -1:
                netlink_child.close()
                os.close(go_in)
                os.close(error_out)

    netlink_child.close()
    os.close(go_in)
    os.close(error_out)
    return _launched(Launch(pid, go_out, error_in), cfg.new_netns, netlink_parent)


def _joining_through_fds(cfg: child.ChildConfig) -> tuple[child.ChildConfig, list[int]]:
    """The pod's pins are hidden inside the view the launcher builds first: the child joins its namespaces
    through descriptors opened here (returned, for the launcher to close after the fork)."""
    join_fds = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path, _ in cfg.join]
    join = tuple((f"fd:{fd}", nstype) for fd, (_, nstype) in zip(join_fds, cfg.join, strict=True))
    return cfg._replace(view_built=True, join=join), join_fds


def _launched(launch: Launch, new_netns: bool, netlink_parent: socket.socket) -> Launch:
    """With a new netns, the child hands back a netlink socket made inside it (or fails and says why)."""
    try:
        if new_netns:
            netlink = nsfork.receive_socket(netlink_parent)
            if netlink is None:  # the child failed before it could: its report is on the error pipe
                reason = _read_all(launch.error_in)  # read before abort() closes the pipe
                launch.abort()
                raise MinirunError(f"container setup failed: {reason}")
            launch.netlink = netlink
    finally:
        netlink_parent.close()
    return launch


def entering_new_view(build: Callable[[], None]) -> contextlib.AbstractContextManager[None]:
    """nsfork.entering_new_mount_namespace, a failure of `build` reported as the container's setup failure."""

    def build_reporting_failure() -> None:
        try:
            build()
        except OSError as exc:
            raise MinirunError(f"container setup failed: {exc}") from None

    return nsfork.entering_new_mount_namespace(build_reporting_failure)


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    text = b"".join(chunks).decode(errors="replace")
    return text.partition(":")[2] or "the container process exited before it was ready"


_EXEC_REASONS = {
    errno.ENOENT: "executable file not found in $PATH",
    errno.ENOTDIR: "executable file not found in $PATH",
    errno.EACCES: "permission denied (a directory, or no execute bit)",
    errno.ENOEXEC: "exec format error",
}


def describe_failure(failure: str) -> str:
    """The one-line message for a child's failure report (see child.report_failure)."""
    kind, _, detail = failure.partition(":")
    if kind != child.EXEC_FAILED:
        return f"container setup failed: {detail}"
    err, _, command = detail.partition(":")
    number = int(err) if err.isdigit() else 0
    reason = _EXEC_REASONS.get(number) or (os.strerror(number) if number else err)
    return f'exec: "{command}": {reason}'


def failure_exit_code(failure: str) -> int:
    kind, _, detail = failure.partition(":")
    if kind != child.EXEC_FAILED:
        return EXIT_MINIRUN_FAILED
    err = detail.partition(":")[0]
    return 127 if err.isdigit() and int(err) in (errno.ENOENT, errno.ENOTDIR) else 126


def wait_forwarding_signals(pid: int, on_winch: Callable[[], None] | None = None) -> int:
    """Wait for `pid`, forwarding FORWARDED_SIGNALS to it; return its exit status (Docker's convention)."""
    watched = {signal.SIGCHLD, *FORWARDED_SIGNALS}
    if on_winch is not None:
        watched.add(signal.SIGWINCH)
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    while True:
        info = signal.sigwaitinfo(watched)
        if info.si_signo == signal.SIGCHLD:
            reaped, status = os.waitpid(pid, os.WNOHANG)
            if reaped == pid:
                return exit_status(status)
            continue
        if info.si_signo == signal.SIGWINCH:
            on_winch()
            continue
        if info.si_code == SI_KERNEL:
            continue  # generated by the terminal for the whole foreground process group, PID 1 included
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, info.si_signo)
