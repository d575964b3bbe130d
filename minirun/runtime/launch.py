"""Process mechanics shared by `run` and `exec`: fork into new namespaces, release the child to exec,
learn whether exec worked, forward signals and wait."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
from collections.abc import Callable, Iterator

from minirun.errors import EXIT_MINIRUN_FAILED, MinirunError
from minirun.kernel import syscalls as k
from minirun.runtime import child

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

    unshare(CLONE_NEWPID) only affects the caller's future children, so the launcher unshares, forks once,
    and setns()es straight back to its own PID namespace: later forks (nft) stay on the host. With
    `pid_namespace` (a pod sharing its PID namespace) the child joins that one instead, in the same way,
    and is born in a mount namespace whose view the launcher built first (entering_new_mount_namespace):
    in a PID namespace shared with other containers, one allowed to ptrace must never find a process
    whose /proc/PID/root is the host's tree (the runc exec race, CVE-2016-9962).
    """
    build_first = pid_namespace is not None
    join_fds = [os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path, _ in cfg.join] if build_first else []
    if build_first:
        # The pod's pins are hidden inside the view: the child joins through descriptors opened here.
        join = tuple((f"fd:{fd}", nstype) for fd, (_, nstype) in zip(join_fds, cfg.join, strict=True))
        cfg = cfg._replace(view_built=True, join=join)
    netlink_parent, netlink_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    go_in, go_out = os.pipe2(os.O_CLOEXEC)
    error_in, error_out = os.pipe2(os.O_CLOEXEC)
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    # A foreground container dies with its launcher; switching to --user clears the parent-death signal set
    # early, so the child re-arms it after the switch, checking this pidfd for a launcher already gone.
    launcher = os.pidfd_open(os.getpid()) if cfg.die_with_parent else None
    target_pidns = os.open(pid_namespace, os.O_RDONLY | os.O_CLOEXEC) if pid_namespace else None
    # SIGCHLD stays blocked from before the fork, so an early exit is never missed by sigwaitinfo(); the
    # forwarded signals too, so one that arrives while the network is set up is held and passed on to the
    # container once it runs, instead of killing the launcher half-way. (The child unblocks all before exec.)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, *FORWARDED_SIGNALS})
    view = entering_new_mount_namespace(lambda: child.build_view(cfg)) if build_first else contextlib.nullcontext()
    pid = -1
    try:
        with view:
            if target_pidns is None:
                k.unshare(k.CLONE_NEWPID)
            else:
                k.setns(target_pidns, k.CLONE_NEWPID)
            pid = os.fork()
            if pid == 0:
                os.close(own_pidns)
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
            k.setns(own_pidns, k.CLONE_NEWPID)
            os.close(own_pidns)
            if launcher is not None:
                os.close(launcher)
            for fd in join_fds:
                os.close(fd)
            if target_pidns is not None:
                os.close(target_pidns)
            if pid == -1:
                netlink_child.close()
                os.close(go_in)
                os.close(error_out)

    netlink_child.close()
    os.close(go_in)
    os.close(error_out)

    launch = Launch(pid, go_out, error_in)
    if cfg.new_netns:
        _, fds, _, _ = socket.recv_fds(netlink_parent, 16, 1)
        if not fds:
            launch.abort()
            raise MinirunError(f"container setup failed: {_read_all(error_in)}")
        launch.netlink = socket.socket(fileno=fds[0])
    netlink_parent.close()
    return launch


@contextlib.contextmanager
def entering_mount_namespace(target: int) -> Iterator[None]:
    """Enter the mount namespace `target` (an nsfs descriptor) for the body, then go back to our own mount
    namespace, root and working directory."""
    with _returning_to_own_mount_namespace():
        k.setns(target, k.CLONE_NEWNS)
        yield


@contextlib.contextmanager
def entering_new_mount_namespace(build: Callable[[], None]) -> Iterator[None]:
    """Run `build` in a new, private mount namespace of this process, keep it for the body (children forked
    there are born in it), then go back to our own mount namespace, root and working directory. Open
    whatever the body needs before: after `build` this process sees the container's view."""
    with _returning_to_own_mount_namespace():
        k.unshare(k.CLONE_NEWNS)
        k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
        try:
            build()
        except OSError as exc:
            raise MinirunError(f"container setup failed: {exc}") from None
        yield


@contextlib.contextmanager
def _returning_to_own_mount_namespace() -> Iterator[None]:
    own_mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    own_cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield
    finally:
        k.setns(own_mnt, k.CLONE_NEWNS)  # our root too, then our working directory
        os.fchdir(own_cwd)
        os.close(own_mnt)
        os.close(own_cwd)


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


def exit_status(wait_status: int) -> int:
    """Docker's convention: the exit code, or 128+N when killed by signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


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
