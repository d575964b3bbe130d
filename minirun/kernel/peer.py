"""Who is on the other end of a unix socket, as the kernel vouches for it: SO_PEERCRED and the peer's namespaces.

The supervisor serves only a peer that is root and sits in its own mount, pid, net and user namespaces:
the CLI on the same host. A container's process, even root in the container, is in other namespaces.

Two traps (see unix(7) and socket(7)):
- SO_PEERCRED's pid is translated into the reader's pid namespace, and is 0 when the peer is not visible
  there: 0 names no process and is refused.
- The pid can be recycled: the peer may exit right after connecting and another process take its pid, so
  reading /proc/<pid> could describe a stranger. SO_PEERPIDFD (Linux >= 6.5) gives a pidfd for the very
  process that connected; /proc/<pid> is read through one directory fd, and afterwards the pidfd must still
  name a live process: a live process keeps its pid, so what was read was the peer's.

SO_PEERCRED: https://man7.org/linux/man-pages/man7/unix.7.html
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
from typing import NamedTuple

SO_PEERPIDFD = 77  # include/uapi/asm-generic/socket.h; Python 3.11 does not name it
NAMESPACES = ("mnt", "pid", "net", "user")
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Credentials(NamedTuple):
    pid: int  # 0: not visible in our pid namespace
    uid: int
    gid: int


NamespaceIds = dict[str, tuple[int, int]]  # "net" -> (st_dev, st_ino) of /proc/<pid>/ns/net


def credentials(sock: socket.socket) -> Credentials:
    """The peer's pid, uid and gid as they were when it connected (socket(7) SO_PEERCRED)."""
    return Credentials(*_UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)))


def own_namespaces() -> NamespaceIds | None:
    """This process's namespaces; None when /proc is not our pid namespace's (then no peer can be checked)."""
    if os.readlink("/proc/self") != str(os.getpid()):
        return None
    fd = os.open("/proc/self", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _namespace_ids(fd)
    finally:
        os.close(fd)


def refusal(sock: socket.socket, own: NamespaceIds | None) -> str | None:
    """Why the peer of `sock` may not use the supervisor, or None when it is root in our namespaces."""
    if own is None:
        return "the supervisor's /proc does not belong to its pid namespace, so no client can be checked"
    peer = credentials(sock)
    if peer.uid != 0:
        return f"peer pid {peer.pid} runs as uid {peer.uid}, not root"
    if peer.pid <= 0:
        return "peer process is not visible in the supervisor's pid namespace"
    try:
        pidfd = _peer_pidfd(sock, peer.pid)
    except OSError:
        return f"peer pid {peer.pid} exited before it could be checked"
    try:
        try:
            proc_dir = os.open(f"/proc/{peer.pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return f"peer pid {peer.pid} exited before it could be checked"
        try:
            theirs = _namespace_ids(proc_dir)
        except OSError as exc:
            return f"cannot read the namespaces of peer pid {peer.pid}: {exc.strerror}"
        finally:
            os.close(proc_dir)
        if not _alive(pidfd):
            return f"peer pid {peer.pid} exited before it could be checked"
    finally:
        os.close(pidfd)
    for name in NAMESPACES:
        if theirs[name] != own[name]:
            return f"peer pid {peer.pid} is in another {name} namespace than the supervisor"
    return None


def _namespace_ids(proc_dir: int) -> NamespaceIds:
    ids = {}
    for name in NAMESPACES:
        st = os.stat(f"ns/{name}", dir_fd=proc_dir)
        ids[name] = (st.st_dev, st.st_ino)
    return ids


def _peer_pidfd(sock: socket.socket, pid: int) -> int:
    try:
        return sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError as exc:
        if exc.errno not in (errno.ENOPROTOOPT, errno.EINVAL):  # a kernel older than 6.5
            raise
    # Older kernels: a pidfd for whoever has the pid now. A peer that died and had its pid taken between
    # connect() and here is not caught; every other case is.
    return os.pidfd_open(pid)


def _alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    return True
