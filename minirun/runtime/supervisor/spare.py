"""The spare worker: a child the supervisor forks ahead of time, which imports the whole `run` path (the
runtime, the netlink codecs, the firewall driver: ~40 ms here) and then waits for one job. A `run -d`,
`start` or policy restart is handed to it (the client's connection and the log hand-off channel, over
SCM_RIGHTS), as is the teardown of a container that ended (its record), and served at once, while the
supervisor forks the next spare. It serves exactly one job and exits, as a worker forked on demand does: a
container never shares a process with another's setup.

The supervisor stays small (it never imports the run path itself); the spare is one more process, idle
in recv(2), that ends when the supervisor closes its end of the channel (idle exit, kill -9 of the
supervisor: the kernel closes it then).

SCM_RIGHTS: https://man7.org/linux/man-pages/man7/unix.7.html
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, NamedTuple

# A request line is at most connections.REQUEST_LIMIT bytes; its JSON form is no longer.
MESSAGE_LIMIT = (1 << 20) + 4096


class Spare(NamedTuple):
    pid: int
    channel: socket.socket  # the supervisor's end


class HandedOver(NamedTuple):
    payload: dict[str, Any]
    fds: list[int]  # for a request: the client's connection, then the log hand-off channel


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(the supervisor's end, the spare's end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)


def hand_over(spare: Spare, payload: dict[str, Any], fds: list[int]) -> bool:
    """Give one job to `spare`; False when it cannot take it (it died), and the caller forks a worker."""
    try:
        socket.send_fds(spare.channel, [json.dumps(payload).encode()], fds)
    except OSError:
        return False
    finally:
        spare.channel.close()  # one request per spare: it reads the message, then sees the end
    return True


def wait_for_request(channel: socket.socket) -> HandedOver | None:
    """In the spare: block until the supervisor hands a job over; None when it closed the channel."""
    message, fds, _, _ = socket.recv_fds(channel, MESSAGE_LIMIT, 2, socket.MSG_CMSG_CLOEXEC)
    channel.close()
    if not message:
        for fd in fds:
            os.close(fd)
        return None
    return HandedOver(json.loads(message), fds)


def children() -> set[int]:
    """The supervisor's live children (containers it reaps, workers, the spare), from
    /proc/self/task/TID/children (proc(5)): the supervisor is single-threaded, so its main task has them
    all. Raises OSError on a kernel built without CONFIG_PROC_CHILDREN (then there is no spare)."""
    with open(f"/proc/self/task/{os.getpid()}/children", "rb") as f:
        return {int(pid) for pid in f.read().split()}
