"""The supervisor's children that are not containers, and how it tells them apart from its containers.

- Workers serve one job each: a `run -d`, a `start`, a policy restart, or the teardown of a container that
  ended. The spare (spare.py) is a worker forked ahead of time with the run path imported; a job goes to it
  when it waits, else to a child forked for it. Either way a forked child never returns into the serve loop.
- A child forked by a supervisor whose code on disk changed loads the new code whole first (`jobs`,
  supervisor/jobs.py), and a spare forked before such an upgrade is retired rather than used.
- The supervisor is a child subreaper, so its containers' PID 1s are its children too: `has_containers`
  tells whether any child is neither a worker nor the spare.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

from minirun.runtime import owners
from minirun.runtime.supervisor import jobs, spare
from minirun.spec import ContainerSpec


def _any_child() -> bool:
    """Whether a container of ours still runs, without reading a record: every detached container's PID 1
    is our child (we are their subreaper; the worker that forked it has exited), and so is every helper,
    which the caller counts apart. waitid(WNOHANG | WNOWAIT) raises ECHILD when we have no child at all and
    reaps nothing (wait(2))."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _tear_down_job(jobs_module: Any, record: dict[str, Any]) -> None:
    """In a helper (the spare, or a child forked for it): release everything of an ended container."""
    owners.enter()  # killed half-way, it leaves a dead entry: the next command looks at what it left
    try:
        jobs_module.teardown(record)
    except BaseException:
        owners.keep()  # failed: the entry, dead once this exits, makes the next command look (as a failed step)
        raise


def _serve(jobs_module: Any, payload: dict[str, Any]) -> Callable[..., None]:
    """The job that answers `payload` (protocol.CONTAINER_OPS) in a worker."""
    return {"start": jobs_module.serve_start_request, "restart": jobs_module.serve_restart}.get(
        payload["op"], jobs_module.serve_run_request
    )


def _children_visible() -> bool:
    """Whether the kernel lists a process's children (CONFIG_PROC_CHILDREN): without it the supervisor cannot
    tell a spare from a container, and forks a worker per request instead."""
    try:
        spare.children()
    except OSError:
        return False
    return True


class Workers:
    def __init__(
        self,
        decode_spec: Callable[[Any], ContainerSpec],
        me: dict[str, Any],
        become_helper: Callable[[], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.decode_spec = decode_spec
        self.me = me
        self.code = jobs.code_fingerprint()  # a child forked after an upgrade loads the new code
        self.become_helper = become_helper  # in a forked child: let go of everything the supervisor holds
        self.stopping = stopping
        self.helpers: set[int] = set()  # workers (the spare once it took a job) and teardown children
        self.spare: spare.Spare | None = None  # a worker with the run path imported, waiting for a job
        self.teardowns: dict[int, str] = {}  # pid of a teardown's helper -> the container it tears down

    def spare_exited(self, pid: int) -> bool:
        """`pid` was the spare, which ended before it took a job: forget it (the next job forks a worker)."""
        if self.spare is None or pid != self.spare.pid:
            return False
        self.spare.channel.close()
        self.spare = None
        return True

    def hand_to_spare(self, payload: dict[str, Any], fds: list[int]) -> int | None:
        """The spare's pid once it took the job; None when there is none (or it died): fork a worker then."""
        if self.spare is not None and jobs.code_fingerprint() != self.code:
            self.retire_spare()  # loaded before an upgrade: a worker forked now loads the new code whole
        taken, self.spare = self.spare, None
        if taken is None or not spare.hand_over(taken, payload, fds):
            return None
        return taken.pid

    def fork_helper(self, body: Callable[[], None]) -> int:
        """Fork a child that runs `body` and exits (1 if it raised): it never returns into the serve loop.
        Its owner entry goes at the end (os._exit skips atexit); a body that must leave it (a failed
        teardown) calls owners.keep()."""
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                self.become_helper()
                body()
            except BaseException:  # noqa: BLE001 - the child's end; its errors went to the client or the log
                code = 1
            finally:
                with contextlib.suppress(BaseException):
                    owners.leave()
                os._exit(code)
        return pid

    def fork_worker(
        self, conn: socket.socket, payload: dict[str, Any], worker_channel: socket.socket, log_channel: socket.socket
    ) -> int:
        def serve() -> None:
            log_channel.close()
            _serve(self.jobs(), payload)(conn, payload, self.decode_spec, self.me, worker_channel)

        return self.fork_helper(serve)

    def fork_spare(self) -> None:
        if self.spare is not None or self.stopping() or not _children_visible():
            return
        ours, theirs = spare.channel_pair()

        def wait_then_serve() -> None:
            ours.close()
            fresh = self.jobs()
            fresh.warm()
            handed = spare.wait_for_request(theirs)
            if handed is None:
                return
            if handed.payload["op"] == "teardown":
                _tear_down_job(fresh, handed.payload["record"])
                return
            conn, log_channel = (socket.socket(fileno=fd) for fd in handed.fds)
            _serve(fresh, handed.payload)(conn, handed.payload, self.decode_spec, self.me, log_channel)

        pid = self.fork_helper(wait_then_serve)
        theirs.close()
        self.spare = spare.Spare(pid, ours)

    def retire_spare(self) -> None:
        """Closing its channel ends the spare (it reads end-of-file); it is waited for with the helpers."""
        if self.spare is not None:
            self.spare.channel.close()
            self.helpers.add(self.spare.pid)
            self.spare = None

    def has_containers(self) -> bool:
        """Whether a container of ours still runs: a child that is neither a helper nor the spare."""
        if self.spare is None:
            return _any_child()
        try:
            return bool(spare.children() - self.helpers - {self.spare.pid})
        except OSError:
            return True

    def jobs(self) -> Any:
        """In a forked child: the jobs module, loaded afresh when the code on disk changed (supervisor/jobs.py)."""
        jobs.fresh_code(self.code)
        from minirun.runtime.supervisor import jobs as fresh_jobs

        return fresh_jobs

    def tear_down(self, record: dict[str, Any]) -> None:
        # Teardown imports the netlink code (several MB): do it in a child so the supervisor stays small.
        # The child marks the record exited only after the address is released, so `stop` and `rm`, which
        # wait for "exited", never race with it.
        helper = self.hand_to_spare({"op": "teardown", "record": record}, [])
        if helper is None:
            helper = self.fork_helper(lambda: _tear_down_job(self.jobs(), record))
        self.helpers.add(helper)
        self.teardowns[helper] = record["id"]  # when it is done, the restart policy decides
        self.fork_spare()
