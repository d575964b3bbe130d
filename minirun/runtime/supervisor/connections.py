"""The supervisor's clients, from accept() to their complete request line, without ever blocking its loop.

The supervisor also answers DNS for every user network and reaps every detached container, all in one
selector loop: one client that connects and sends nothing (or half a line) must not stall any of that.
So every connection is checked (kernel.peer) the moment it is accepted, then read without blocking as the
selector reports data, with a deadline for the whole line, a size limit and a bound on how many may be
half-read at once. Refusals go to the supervisor's log (its stderr, state root's supervisor.log), at most
LOG_BURST lines a minute so a flood of refused connections cannot fill /run.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import sys
import time
from typing import NamedTuple

from minirun.kernel import peer

REQUEST_DEADLINE = 2.0  # seconds from accept() to the request's newline; the CLI sends at once
REQUEST_LIMIT = 1 << 20  # bytes; a `run` request is a few KB (the command line and -e values)
MAX_PENDING = 32  # connections being read at once; more are refused until some finish
ACCEPT_BATCH = 16  # connections taken per wakeup: a connect flood must leave the loop time for DNS
REPLY_TIMEOUT = 5.0  # for the one reply, once the request is complete
LOG_BURST = 20
LOG_WINDOW = 60.0
LOG_LINE_LIMIT = 300  # characters: a refusal may quote what the client sent


OUTSIDER_HINT = "run minirun as root in the host's namespaces (not in a container, `ip netns exec` or `unshare`)"


class Request(NamedTuple):
    conn: socket.socket  # blocking again, with REPLY_TIMEOUT: the handler writes one reply and closes it
    line: bytes  # without its newline


class _Pending:
    def __init__(self, conn: socket.socket, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.buffer = bytearray()


class Log:
    """The supervisor's log lines, rate-limited: what an attacker can make us write must stay small."""

    def __init__(self) -> None:
        self.window_start = 0.0
        self.written = 0
        self.suppressed = 0

    def line(self, message: str) -> None:
        now = time.monotonic()
        if now - self.window_start > LOG_WINDOW:
            if self.suppressed:
                self._write(f"{self.suppressed} more such lines were left out")
            self.window_start, self.written, self.suppressed = now, 0, 0
        if self.written >= LOG_BURST:
            self.suppressed += 1
            return
        self.written += 1
        # One line each, however the client's text is made: no forged log lines through a newline.
        printable = message.encode("unicode_escape").decode("ascii")
        if len(printable) > LOG_LINE_LIMIT:
            printable = f"{printable[:LOG_LINE_LIMIT]}... ({len(printable)} characters)"
        self._write(printable)

    @staticmethod
    def _write(message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with contextlib.suppress(OSError, ValueError):
            print(f"{stamp} minirun supervisor: {message}", file=sys.stderr, flush=True)


class Clients:
    """Connections accepted but not yet holding a complete request line."""

    def __init__(self, selector: selectors.BaseSelector, log: Log) -> None:
        self.selector = selector
        self.log = log
        self.pending: dict[int, _Pending] = {}
        self.own_namespaces = peer.own_namespaces()

    def accept(self, listener: socket.socket) -> None:
        """Take waiting connections: refuse a peer that is not root in our namespaces, else start reading."""
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: leave the rest in the backlog for the next round
                self.log.line(f"accept failed: {exc}")
                return
            try:
                why = peer.refusal(conn, self.own_namespaces)
            except OSError as exc:
                why = f"cannot check the peer: {exc}"
            if why is not None:
                self.log.line(f"refused a client: {why}")
                reply_error(conn, f"the minirun supervisor refused this client: {why}", hint=OUTSIDER_HINT)
                continue
            if len(self.pending) >= MAX_PENDING:
                self.log.line(f"refused a client: {MAX_PENDING} connections are already sending their requests")
                reply_error(conn, "the minirun supervisor is busy with other clients; try again")
                continue
            conn.setblocking(False)
            pending = _Pending(conn, time.monotonic() + REQUEST_DEADLINE)
            self.pending[conn.fileno()] = pending
            self.selector.register(conn, selectors.EVENT_READ, ("client", pending))

    def readable(self, pending: _Pending) -> Request | None:
        """Read what `pending` sent; its request once the newline is in."""
        if pending.conn.fileno() < 0:  # already closed (an event from before): nothing to read
            return None
        try:
            chunk = pending.conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            chunk = b""
        if not chunk:  # gone mid-request: nothing to answer
            self._drop(pending)
            return None
        pending.buffer += chunk
        end = pending.buffer.find(b"\n")
        if end < 0:
            if len(pending.buffer) > REQUEST_LIMIT:
                self._refuse(pending, f"request longer than {REQUEST_LIMIT} bytes")
            return None
        if end != len(pending.buffer) - 1:
            self._refuse(pending, "data after the request line")
            return None
        self._forget(pending)
        pending.conn.setblocking(True)
        pending.conn.settimeout(REPLY_TIMEOUT)
        return Request(pending.conn, bytes(pending.buffer[:end]))

    def expire(self) -> None:
        now = time.monotonic()
        for pending in [p for p in self.pending.values() if p.deadline <= now]:
            self._refuse(pending, f"no complete request line within {REQUEST_DEADLINE:g} s")

    def timeout(self, longest: float) -> float:
        """How long the loop may wait before a deadline falls due."""
        if not self.pending:
            return longest
        soonest = min(p.deadline for p in self.pending.values())
        return max(0.0, min(longest, soonest - time.monotonic()))

    def close_all(self) -> None:
        """In a forked helper: these connections are the supervisor's, not ours (so our exit frees nothing,
        and the supervisor closing one is seen by its client at once)."""
        for pending in self.pending.values():
            pending.conn.close()
        self.pending.clear()

    def _refuse(self, pending: _Pending, why: str) -> None:
        self.log.line(f"refused a request: {why}")
        self._forget(pending)
        reply_error(pending.conn, f"the minirun supervisor refused the request: {why}")

    def _drop(self, pending: _Pending) -> None:
        self._forget(pending)
        pending.conn.close()

    def _forget(self, pending: _Pending) -> None:
        self.pending.pop(pending.conn.fileno(), None)
        self.selector.unregister(pending.conn)


def reply_error(conn: socket.socket, message: str, hint: str | None = None) -> None:
    """One error reply, without waiting: a client that does not read loses it. Closes `conn`."""
    reply = json.dumps({"ok": False, "error": message, "hint": hint, "code": 125}).encode() + b"\n"
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(reply)
    conn.close()
