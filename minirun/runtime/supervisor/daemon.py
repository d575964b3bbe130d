"""The supervisor: one small process that watches every detached container of a state root.

Why one supervisor and not a monitor per container (Podman's conmon, containerd's shims): a Python process
costs several MB of private memory, so a monitor per container could not stay near 2 MB per container;
one shared supervisor costs that once. It is a child subreaper (PR_SET_CHILD_SUBREAPER): it forks a
short-lived worker per `run -d` request, the worker does the whole setup (the same code as a foreground
run) and exits, and the container's PID 1 - an orphan now - is re-parented to the supervisor. When a
container ends, the supervisor reaps it, records its exit code and finish time, and a short-lived child
tears down its network (and, with --rm, everything else). It also relays each container's stdout and
stderr into its capped, rotating log (logrelay). The supervisor starts on demand, holds a lock
so there is only one per state root, and exits once no detached container is left running.

Its socket is its control plane: a `run` request starts a process as root. So it serves only a peer that
is root in its own mount, pid, net and user namespaces (kernel.peer), reads every client without blocking
(runtime.connections: deadline, size limit), and takes only what the CLI could have sent (runtime.request).

If the supervisor itself is killed, its containers keep running. The next minirun command that finds one
(reconcile.reconcile) starts a new supervisor, which adopts them (adoption.py): it tears each down when it
ends, with exit status 255, Docker's "unknown" (only the dead supervisor could have learnt the real one).
Their output has no reader then: a write to stdout or stderr fails with EPIPE.

PR_SET_CHILD_SUBREAPER: https://man7.org/linux/man-pages/man2/prctl.2.html; Docker's exit codes:
https://docs.docker.com/engine/containers/run/#exit-status
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import resource
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from minirun import paths
from minirun.errors import MinirunError
from minirun.kernel import proc
from minirun.kernel import syscalls as k
from minirun.runtime import owners, store
from minirun.runtime.model import ContainerStatus
from minirun.runtime.supervisor import adoption, jobs, protocol, restarts
from minirun.runtime.supervisor.connections import Clients, Log, Request, reply_error
from minirun.runtime.supervisor.workers import Workers
from minirun.spec import ContainerSpec

# The CLI's check of a `run -d` spec (cli/run_request.py), handed over by the entry point (cli/supervise.py).
SpecDecoder = Callable[[Any], ContainerSpec]

# How long the supervisor stays after its last container and request (MINIRUN_SUPERVISOR_IDLE, seconds).
IDLE_SECONDS = 2.0
IDLE_ENV = "MINIRUN_SUPERVISOR_IDLE"
# How long an ending supervisor waits for its workers and teardown children to finish.
HELPER_PATIENCE = 5.0
# How long a "sync" (the CLI making sure DNS is served on its network) waits for a gateway:53 still held
# by an exiting supervisor, and how often the loop looks again meanwhile.
SYNC_PATIENCE = 2.0
SYNC_RETRY = 0.02


def identity() -> dict[str, int | None]:
    return {"pid": os.getpid(), "started": proc.start_time(os.getpid())}


def resolver_in_use() -> bool:
    from minirun.runtime.supervisor.resolver import in_use

    return in_use()


def _idle_seconds() -> float:
    raw = os.environ.get(IDLE_ENV)
    try:
        seconds = float(raw) if raw else IDLE_SECONDS
        if not 0 <= seconds < math.inf:
            raise ValueError(raw)
        return seconds
    except ValueError:
        print(
            f"minirun supervisor: {IDLE_ENV}={raw!r} is not a number of seconds; using {IDLE_SECONDS}", file=sys.stderr
        )
        return IDLE_SECONDS


def _running_owned_by(me: dict[str, Any]) -> bool:
    return any(
        r.get("status") in (ContainerStatus.CREATING, ContainerStatus.RUNNING) and r.get("owner") == me
        for r in store.all_records()
    )


class Supervisor:
    def __init__(self, decode_spec: SpecDecoder) -> None:
        self.me = identity()
        self.workers = Workers(decode_spec, self.me, self._become_helper, lambda: self.stopping)
        self.adopted: dict[int, str] = {}  # pidfd -> id of a container a killed supervisor left running
        self.lock_fd: int | None = None  # supervisor.lock, held while serving
        self.restarts = restarts.Restarts()  # containers waiting to start again (--restart)
        self.selector = selectors.DefaultSelector()
        self.log = Log()
        self.clients = Clients(self.selector, self.log)
        self.stopping = False
        self.idle_seconds = _idle_seconds()
        self.syncs: list[tuple[socket.socket, float]] = []  # "sync" clients waiting for a gateway:53
        from minirun.runtime.supervisor.logrelay import Relays

        self.logs = Relays(
            lambda fileobj, data: self.selector.register(fileobj, selectors.EVENT_READ, data), self.selector.unregister
        )
        from minirun.runtime.supervisor.resolver import Resolver

        self.resolver = Resolver()

    def serve(self) -> None:
        # Two descriptors per detached container (its log pipe, its hand-off): the usual soft limit of
        # 1024 would refuse the 500th. The hard limit is what the host allows.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        lock = os.open(paths.supervisor_lock(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another supervisor serves this state root
        self.lock_fd = lock
        k.set_child_subreaper()
        owners.enter()  # the owner of every detached container: if it dies, the next command looks
        listener = self._listen()
        self._adopt()
        self.workers.fork_spare()
        wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_w)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: None)
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self.selector.register(wakeup_r, selectors.EVENT_READ, "signal")
        idle_since: float | None = time.monotonic()
        try:
            while not self.stopping and idle_since is not None:
                self._sync_resolver()
                timeout = self.clients.timeout(0.5 if not self.syncs else SYNC_RETRY)
                restart_in = self.restarts.seconds_to_next()
                for key, _ in self.selector.select(timeout=timeout if restart_in is None else min(timeout, restart_in)):
                    self._on_event(key, listener, wakeup_r)
                self.clients.expire()
                self._answer_syncs()
                self._reap()
                self._restart_due()
                idle_since = self._idle_since(idle_since)
        finally:
            # However it ends (idle, a signal, a failure): if a container of ours is left on record, its entry
            # stays, dead once we exit, so the next command looks after it. Workers still handing one over
            # are waited for first, so the records read here are final.
            self.workers.retire_spare()
            self._wait_for_helpers(HELPER_PATIENCE)
            if _running_owned_by(self.me):
                owners.keep()
            # Unlink before closing: a client that finds no socket starts a new supervisor, which waits
            # for our lock.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(paths.supervisor_socket())
            listener.close()
            os.close(lock)

    def _on_event(self, key: selectors.SelectorKey, listener: socket.socket, wakeup_r: int) -> None:
        if key.data == "accept":
            self.clients.accept(listener)
        elif key.data == "signal":
            self._on_signals(os.read(wakeup_r, 512))
        elif key.data[0] == "client":
            if (complete := self.clients.readable(key.data[1])) is not None:
                self._dispatch(complete)
        elif key.data[0] == "log":
            self.logs.pump(key.data[1])
        elif key.data[0] == "log-handoff":
            self.logs.receive(key.data[1])
        elif key.data[0] == "adopted":
            self._adopted_exited(key.fd)
        else:
            self.resolver.serve_one(key.fileobj, key.data[1])

    def _idle_since(self, idle_since: float) -> float | None:
        """When the supervisor last had something to do; None once it has been idle long enough to exit."""
        busy = self.workers.helpers or self.clients.pending or self.logs or self.syncs or self.adopted or self.restarts
        if busy or self.workers.has_containers():
            return time.monotonic()
        if time.monotonic() - idle_since <= self.idle_seconds:
            return idle_since
        # Read the records only now, once per idle period (not on every wake: with many containers that
        # cost the idle supervisor CPU in proportion, issue 13).
        return time.monotonic() if resolver_in_use() else None

    def _listen(self) -> socket.socket:
        path = paths.supervisor_socket()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a dead supervisor's socket: we hold the lock, so nobody else serves it
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o077)
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        listener.listen(64)
        listener.setblocking(False)
        return listener

    def _on_signals(self, signums: bytes) -> None:
        if signal.SIGTERM in signums or signal.SIGINT in signums:
            self.stopping = True  # containers keep running; reconcile() looks after them

    def _wait_for_helpers(self, patience: float) -> None:
        deadline = time.monotonic() + patience
        helpers = self.workers.helpers
        while helpers and time.monotonic() < deadline:
            for pid in list(helpers):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue
                helpers.discard(pid)
            if helpers:
                time.sleep(SYNC_RETRY)  # a worker finishes within milliseconds; bounded by `patience`

    def _sync_resolver(self) -> None:
        for sock, name in self.resolver.sync(self.selector.unregister):
            self.selector.register(sock, selectors.EVENT_READ, ("dns", name))

    def _dispatch(self, complete: Request) -> None:
        conn = complete.conn
        try:
            payload = protocol.parse_line(complete.line)
        except MinirunError as exc:
            self.log.line(f"refused a request: {exc.msg}")
            reply_error(conn, exc.msg, exc.hint)
            return
        if jobs.code_fingerprint() != self.workers.code:  # minirun was upgraded under us: never run its new code here
            self._refuse_as_outdated(conn, payload["op"])
            if self.stopping or payload["op"] in protocol.CONTAINER_OPS:
                return
        if payload["op"] == "sync":
            # Answered here, not in a worker: the resolver's sockets live in this process. A gateway:53 may
            # still be held for a moment by a supervisor that is exiting: the answer waits a little while
            # for it, on later rounds of the loop (never sleeping in it: DNS and other clients go on).
            self._sync_resolver()
            self.syncs.append((conn, time.monotonic() + SYNC_PATIENCE))
            self._answer_syncs()
            return
        owners.enter()  # again: at start it may have failed (a full state dir), and this request may create
        self._serve_in_worker(conn, payload)

    def _serve_in_worker(self, conn: socket.socket, payload: dict[str, Any]) -> None:
        """A worker (the spare if one waits) serves `payload`; it answers on `conn`."""
        from minirun.runtime.supervisor import logrelay

        log_channel, worker_channel = logrelay.handoff_pair()
        pid = self.workers.hand_to_spare(payload, [conn.fileno(), worker_channel.fileno()])
        if pid is None:
            pid = self.workers.fork_worker(conn, payload, worker_channel, log_channel)
        conn.close()
        worker_channel.close()
        self.logs.expect(log_channel)
        self.workers.helpers.add(pid)
        self.workers.fork_spare()  # for the next request, while this one is served

    def _restart_due(self) -> None:
        """Start again the containers whose restart policy's wait is over (supervisor/restarts.py)."""
        for container_id in self.restarts.take_due():
            nobody, placeholder = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            nobody.close()  # no client waits for this one: the worker logs a failure instead
            self._serve_in_worker(placeholder, {"op": "restart", "id": container_id, "env": {}})

    def _refuse_as_outdated(self, conn: socket.socket, op: str) -> None:
        """The code on disk is not the code this supervisor runs (an upgrade). Idle, it says so and exits, and
        the client starts a fresh one; watching containers, it cannot hand them over, so it refuses to run
        new ones and says why (issue 15: minirun never silently runs a container through old code). A sync
        (DNS for a foreground run) is still answered then: its container runs in the client's own code."""
        busy = bool(self.workers.helpers or self.adopted) or self.workers.has_containers()
        if busy and op not in protocol.CONTAINER_OPS:
            return
        self.log.line(f"the minirun code on disk changed since this supervisor started; refused a {op} request")
        reply = {"ok": False, "outdated": True, "busy": busy, "pid": os.getpid(), "code": 125}
        if busy:
            reply["error"] = (
                f"the minirun supervisor (pid {os.getpid()}) runs the code minirun had before it was upgraded, "
                "and still watches running containers: it starts no new one"
            )
            reply["hint"] = "stop or remove its containers (minirun ps), or wait for them to end, then run again"
        else:
            reply["error"] = "the minirun supervisor was started from older code and is exiting"
            self.stopping = True
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(reply).encode() + b"\n")
        conn.close()

    def _answer_syncs(self) -> None:
        if not self.syncs:
            return
        missing = self.resolver.missing()
        now = time.monotonic()
        waiting = []
        for conn, deadline in self.syncs:
            if missing and now < deadline:
                waiting.append((conn, deadline))
                continue
            if missing:
                self.log.line(f"DNS not served on network(s) {', '.join(missing)}: their gateway's port 53 is taken")
            with contextlib.suppress(OSError):
                conn.sendall(b'{"ok": true}\n')
            conn.close()
        self.syncs = waiting

    def _become_helper(self) -> None:
        for conn, _ in self.syncs:  # the supervisor answers those, not a helper
            conn.close()
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        self.selector.close()
        self.clients.close_all()
        adoption.close_all(self.adopted)
        if self.lock_fd is not None:
            # The lock is the supervisor's alone: a helper still running after a kill -9 of the supervisor
            # (a spare warming up, a worker) must not keep the next supervisor from starting.
            os.close(self.lock_fd)
            self.lock_fd = None
        if self.workers.spare is not None:
            self.workers.spare.channel.close()  # a worker forked after the spare must not keep it alive

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.workers.helpers:
                self.workers.helpers.discard(pid)
                if (ended := self.workers.teardowns.pop(pid, None)) is not None and not self.stopping:
                    self.restarts.consider(ended)
            elif self.workers.spare_exited(pid):
                self.log.line(f"the spare worker exited early (status {status}); jobs fork a worker meanwhile")
            else:
                self._container_exited(pid, status)

    def _container_exited(self, pid: int, status: int) -> None:
        record = next(
            (
                r
                for r in store.all_records()
                if r.get("pid") == pid and r.get("status") in (ContainerStatus.RUNNING, ContainerStatus.CREATING)
            ),
            None,
        )
        if record is None:
            return  # a process that was re-parented to us but is not a container's PID 1
        record.update(exit_code=proc.exit_status(status), finished=store.now_iso())
        # Every byte it wrote is in its log before teardown marks it exited (`logs -f` stops then).
        self.logs.finish(record["id"])
        self.workers.tear_down(record)

    def _adopt(self) -> None:
        self.adopted = adoption.adopt_orphans(self.me)
        for pidfd, container_id in self.adopted.items():
            self.selector.register(pidfd, selectors.EVENT_READ, ("adopted", container_id))
        if self.adopted:
            self.log.line(f"adopted {len(self.adopted)} container(s) a killed supervisor left running")

    def _adopted_exited(self, pidfd: int) -> None:
        container_id = self.adopted.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        record = adoption.ended(container_id, self.me)
        if record is not None:
            self.workers.tear_down(record)


def main(decode_spec: SpecDecoder) -> None:
    try:
        Supervisor(decode_spec).serve()
    except Exception as exc:  # noqa: BLE001 - nobody to report to but the supervisor's log
        print(f"minirun supervisor: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
