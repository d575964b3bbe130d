"""Detached containers' output, relayed by the supervisor into capped, rotating log files.

A container cannot write its log file itself (the file would grow without bound), so its stdout and
stderr are one pipe, and the supervisor - which already outlives every detached container - reads it
and writes the bytes through a logfile.RotatingWriter. No process per container (as Docker's
containerd-shim or Podman's conmon would be): the relay is a few hundred bytes of state in the
supervisor's select loop. The worker that creates the container hands the pipe's read end to the
supervisor over a socketpair made for that worker (SCM_RIGHTS), before the container may exec.

Passing a descriptor over a unix socket (SCM_RIGHTS): https://man7.org/linux/man-pages/man7/unix.7.html
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any

from minirun.runtime import logfile

MESSAGE_LIMIT = 4096
DRAIN_LIMIT = 1 << 20  # at a container's exit: what a survivor in a shared PID namespace may still add


def handoff_pair() -> tuple[socket.socket, socket.socket]:
    """(the supervisor's end, the worker's end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)


def hand_off(channel: socket.socket, container_id: str, path: str, options: logfile.LogOptions, read_fd: int) -> None:
    """In the worker: create the (empty) log and give the supervisor the read end of the container's
    output pipe."""
    # Not O_EXCL: a container started again (`start`, `restart`) appends to its log, as Docker's does.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
    message = json.dumps({"id": container_id, "path": path, "options": list(options)}).encode()
    socket.send_fds(channel, [message], [read_fd])


class Relay:
    __slots__ = ("container_id", "fd", "writer")

    def __init__(self, container_id: str, fd: int, writer: logfile.RotatingWriter) -> None:
        self.container_id = container_id
        self.fd = fd
        self.writer = writer

    def pump(self) -> bool:
        """Move what the pipe holds now to the log; False once every writer has closed it."""
        try:
            data = os.read(self.fd, logfile.CHUNK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        self.writer.write(data)
        return True

    def drain(self) -> None:
        moved = 0
        while moved < DRAIN_LIMIT:
            try:
                data = os.read(self.fd, logfile.CHUNK)
            except OSError:  # BlockingIOError: nothing more was written
                return
            if not data:
                return
            self.writer.write(data)
            moved += len(data)

    def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


class Relays:
    """The supervisor's side. Every method survives anything a container or a dying worker can do."""

    def __init__(self, register, unregister) -> None:
        self._register = register  # (fileobj, data) -> None: the supervisor's selector
        self._unregister = unregister
        self.channels: dict[int, socket.socket] = {}
        self.relays: dict[str, Relay] = {}

    def __bool__(self) -> bool:
        return bool(self.channels or self.relays)

    def expect(self, channel: socket.socket) -> None:
        """A worker was forked with the other end of `channel`."""
        channel.setblocking(False)
        self.channels[channel.fileno()] = channel
        self._register(channel, ("log-handoff", channel.fileno()))

    def receive(self, key: int) -> None:
        channel = self.channels.pop(key, None)
        if channel is None:
            return
        try:
            # CLOEXEC: no later container (forked from this process) may inherit another one's output.
            message, fds, _, _ = socket.recv_fds(channel, MESSAGE_LIMIT, 1, socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            self.channels[key] = channel
            return
        except OSError:
            message, fds = b"", []
        self._unregister(channel)
        channel.close()
        if not fds:
            return  # the worker failed before it had a container: nothing to relay
        try:
            request: dict[str, Any] = json.loads(message)
            options = logfile.LogOptions(*request["options"])
            container_id, path = str(request["id"]), str(request["path"])
        except (ValueError, KeyError, TypeError):
            for fd in fds:
                os.close(fd)
            return
        os.set_blocking(fds[0], False)
        relay = Relay(container_id, fds[0], logfile.RotatingWriter(path, options, create=False))
        self.relays[container_id] = relay
        self._register(fds[0], ("log", container_id))

    def receive_pending(self) -> None:
        """Take every hand-off already sent (before a container's exit is handled, so none is missed)."""
        for key in list(self.channels):
            self.receive(key)

    def pump(self, container_id: str) -> None:
        relay = self.relays.get(container_id)
        if relay is not None and not relay.pump():
            self._close(relay)

    def finish(self, container_id: str) -> None:
        """The container's PID 1 was reaped: write what it left in the pipe, then let go."""
        self.receive_pending()
        relay = self.relays.get(container_id)
        if relay is not None:
            relay.drain()
            self._close(relay)

    def _close(self, relay: Relay) -> None:
        self.relays.pop(relay.container_id, None)
        with contextlib.suppress(KeyError, ValueError):
            self._unregister(relay.fd)
        relay.close()
