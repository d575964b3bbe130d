"""Forking into namespaces: the one place minirun switches namespaces and hands descriptors from a forked
child back to its parent. Callers decide the order of the steps; this module only does each step the one
right way.

- A child born in another PID namespace (PidNamespaceFork): unshare(CLONE_NEWPID) and
  setns(fd, CLONE_NEWPID) never move the caller, only the PID namespace of its *next children*
  (/proc/self/ns/pid_for_children). So the caller switches, forks once and switches straight back: its later
  children (nft, ip) stay in its own. pid_namespaces(7), unshare(2), setns(2).
- This process in another mount namespace for a while (entering_mount_namespace,
  entering_new_mount_namespace): a child forked there is born in it, so it never has the host's tree as its
  root (the runc exec race, CVE-2016-9962). mount_namespaces(7).
- A child's own namespaces (join_namespaces, then enter_new_namespaces: unshare(2)).
- A NETLINK_ROUTE socket handed back from inside a network namespace (send_netlink, receive_socket,
  netlink_in): a socket stays in the network namespace it was created in for its whole life, and a unix
  socket passes it to another process as SCM_RIGHTS ancillary data (unix(7)). So the parent configures the
  child's network without ever entering it (H4 in STYLE.md); pyroute2's IPRoute(netns=...) does the same.

setns(2) into a mount namespace and unshare(CLONE_NEWNS) need a single-threaded caller (EINVAL otherwise):
minirun starts no threads before these steps.

Man pages: https://man7.org/linux/man-pages/man2/setns.2.html, .../man2/unshare.2.html,
.../man7/pid_namespaces.7.html, .../man7/mount_namespaces.7.html, .../man7/unix.7.html (SCM_RIGHTS).
This is the kernel layer: it imports nothing of minirun's above it; callers pass in descriptors and callables.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterable, Iterator

from minirun.kernel import syscalls as k

_NSFS_OPEN = os.O_RDONLY | os.O_CLOEXEC


class PidNamespaceFork:
    """fork(2) with the child born in another PID namespace while the caller stays in its own.

        with PidNamespaceFork(target) as pidns:  # opens /proc/self/ns/pid: before any change of mount view
            with view:
                pid = pidns.fork()
                if pid == 0:
                    ...  # the child: never leaves this block (it execs or _exits)
        # the parent is back in its own PID namespace for children, after leaving the view

    `target` is an nsfs descriptor of the PID namespace to join (the caller closes it), None for a new one;
    the first child of a new one is its PID 1 (pid_namespaces(7): it reaps the namespace's orphans, and
    when it exits the kernel kills every other process in it).
    """

    def __init__(self, target: int | None = None) -> None:
        self.target = target
        self._own = -1
        self.pid = -1  # -1: nothing forked (yet); 0: this is the child; else the child's PID

    def __enter__(self) -> PidNamespaceFork:
        # Opened here, not after the switch: inside a container's view /proc may not be mounted yet.
        self._own = os.open("/proc/self/ns/pid", _NSFS_OPEN)
        return self

    def fork(self) -> int:
        """Switch the PID namespace for children, fork; 0 in the child, the child's PID in the parent."""
        if self.target is None:
            k.unshare(k.CLONE_NEWPID)
        else:
            k.setns(self.target, k.CLONE_NEWPID)
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._own)  # the child keeps no handle on its parent's PID namespace
        return self.pid

    def __exit__(self, *exc: object) -> None:
        if self.pid != 0:  # the parent, also when nothing was forked: later children are born at home again
            k.setns(self._own, k.CLONE_NEWPID)
            os.close(self._own)


def fork_into_new_pid_namespace() -> int:
    """fork(2), the child as PID 1 of a new PID namespace (see PidNamespaceFork); 0 in the child."""
    with PidNamespaceFork() as pidns:
        return pidns.fork()


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
    whatever the body needs before: after `build` this process sees the container's view. An exception of
    `build` propagates (the caller words it), after the way back."""
    with _returning_to_own_mount_namespace():
        k.unshare(k.CLONE_NEWNS)
        # unshare(CLONE_NEWNS) copies the mounts with their propagation: private first, so nothing `build`
        # mounts shows up in the namespace we came from (mount_namespaces(7), "shared subtrees").
        k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
        build()
        yield


@contextlib.contextmanager
def _returning_to_own_mount_namespace() -> Iterator[None]:
    own_mnt = os.open("/proc/self/ns/mnt", _NSFS_OPEN)
    own_cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield
    finally:
        k.setns(own_mnt, k.CLONE_NEWNS)  # our root too, then our working directory
        os.fchdir(own_cwd)
        os.close(own_mnt)
        os.close(own_cwd)


def join_namespaces(namespaces: Iterable[tuple[int, int]], *, close: bool = False) -> int:
    """setns(2) the calling process into each (nsfs descriptor, CLONE_* type), in the order given (the caller's:
    joining mnt changes what later paths mean), closing each descriptor after with `close`. Returns the
    CLONE_* flags joined. A lazy iterable is consumed one item at a time: each is opened after the last join."""
    joined = 0
    for fd, nstype in namespaces:
        k.setns(fd, nstype)
        if close:
            os.close(fd)
        joined |= nstype
    return joined


def enter_new_namespaces(flags: int) -> None:
    """unshare(2): the calling process in new namespaces of the CLONE_* `flags`. Not for CLONE_NEWPID, which
    only moves children: see PidNamespaceFork."""
    if flags & k.CLONE_NEWPID:
        raise ValueError("CLONE_NEWPID moves only children: use PidNamespaceFork")
    k.unshare(flags)


def socket_channel() -> tuple[socket.socket, socket.socket]:
    """A connected pair for a forked child to hand its parent a descriptor: SOCK_SEQPACKET keeps each message
    whole and shows the peer's exit as an empty read; close-on-exec, so no command inherits an end."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)


def netlink_route_socket() -> socket.socket:
    """A NETLINK_ROUTE socket of the network namespace the caller is in now; it stays in that namespace."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)


def send_socket(channel: socket.socket, sock: socket.socket) -> None:
    """Pass `sock` to the other end of `channel` (SCM_RIGHTS: the receiver gets its own descriptor)."""
    socket.send_fds(channel, [b"n"], [sock.fileno()])


def send_netlink(channel: socket.socket) -> None:
    """Hand the other end of `channel` a NETLINK_ROUTE socket of our current network namespace."""
    netlink = netlink_route_socket()
    send_socket(channel, netlink)
    netlink.close()


def receive_socket(channel: socket.socket) -> socket.socket | None:
    """The socket the other end sent; None when it closed its end (exited, failed) before sending one."""
    _, fds, _, _ = socket.recv_fds(channel, 16, 1)
    return socket.socket(fileno=fds[0]) if fds else None


def netlink_in(netns_path: str) -> socket.socket | None:
    """A NETLINK_ROUTE socket inside the network namespace at `netns_path` (/proc/PID/ns/net or a pin such as
    /run/netns/NAME), without moving the caller: a forked child joins it, opens the socket there and hands it
    back. None when the child could not."""
    parent_end, child_end = socket_channel()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            parent_end.close()
            fd = os.open(netns_path, _NSFS_OPEN)
            k.setns(fd, k.CLONE_NEWNET)
            send_netlink(child_end)
            code = 0
        finally:
            os._exit(code)
    child_end.close()
    try:
        return receive_socket(parent_end)
    finally:
        parent_end.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
