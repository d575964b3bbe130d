"""The supervisor's only doors into the rest of minirun: the jobs its forked children run.

A supervisor lives for minutes and outlives upgrades: `pip install -U minirun` (or a `git pull` of an
editable install) replaces the code on disk under a running supervisor, which then forks a worker for the
next `run -d` and a teardown child when a container ends. Those children import what they need lazily, from
the disk, on top of the modules the supervisor had loaded at start - old and new code mixed in one process
(seen in issue 14: `ImportError: cannot import name 'describe'`, and containers never torn down).

Two rules keep that safe:
- This module and its names (serve_run_request, serve_start_request, serve_restart, run_detached, teardown,
  warm) are a contract: never renamed, never moved, signatures only ever extended with defaulted parameters.
  Supervisors started from code older than this module call `minirun.runtime.container.run_detached` (a lazy
  name of the package), `minirun.runtime.gc.teardown` and `minirun.runtime.launch.exit_status`: those stay
  importable as forwarders until issue 15's version exchange lets the CLI replace an outdated idle supervisor.
- A supervisor whose code on disk changed since it started runs no new container (daemon.py refuses the
  request, and exits when idle so the client starts a fresh one). A child it still forks (the teardown of
  its own containers, or a worker in the moment of the upgrade) forgets every loaded minirun module before
  the job's imports (`fresh_code`), so the job runs entirely on the new code, never a mix.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import minirun
from minirun.errors import MinirunError, host_error
from minirun.spec import ContainerSpec

PACKAGE_DIR = os.path.dirname(os.path.abspath(minirun.__file__))


def code_fingerprint() -> tuple[tuple[str, int, int], ...]:
    """What identifies the code on disk: every module's path, size and modification time (a reinstall or a
    checkout changes one of them). About 100 stat calls: done once at start, then only in a forked child."""
    found = []
    for root, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                found.append((os.path.relpath(path, PACKAGE_DIR), info.st_size, info.st_mtime_ns))
    return tuple(found)


def fresh_code(started_with: tuple[tuple[str, int, int], ...]) -> bool:
    """In a forked child of the supervisor: when the code on disk is not the code the supervisor loaded,
    drop every minirun module from sys.modules so the job's imports load the new code whole. Returns whether
    it did. The caller then reaches the job only through a fresh `import minirun.runtime.supervisor.jobs`."""
    if code_fingerprint() == started_with:
        return False
    for name in [n for n in sys.modules if n == "minirun" or n.startswith("minirun.")]:
        del sys.modules[name]
    return True


def serve_run_request(
    conn: socket.socket,
    payload: dict[str, Any],
    decode_spec: Callable[[Any], ContainerSpec],
    supervisor: dict[str, Any],
    log_channel: socket.socket,
) -> None:
    """In a worker: answer one "run" request (parsed by request.parse_line) with one JSON response."""

    def run() -> str:
        try:
            spec = decode_spec(payload["spec"])
        except MinirunError as exc:
            from minirun.runtime.supervisor.connections import Log

            Log().line(f"refused a request: {exc.msg}")
            raise
        os.environ.update(payload["env"])
        return run_detached(spec, supervisor, log_channel)

    _answer(conn, run)


def serve_start_request(
    conn: socket.socket,
    payload: dict[str, Any],
    decode_spec: Callable[[Any], ContainerSpec],
    supervisor: dict[str, Any],
    log_channel: socket.socket,
) -> None:
    """In a worker: answer one "start" request (a created or exited container run again) as serve_run_request
    answers a "run"."""

    def start() -> str:
        from minirun.runtime.container import stopped

        os.environ.update(payload["env"])
        return stopped.start_in_worker(payload["id"], decode_spec, supervisor, log_channel)

    _answer(conn, start)


def serve_restart(
    conn: socket.socket,
    payload: dict[str, Any],
    decode_spec: Callable[[Any], ContainerSpec],
    supervisor: dict[str, Any],
    log_channel: socket.socket,
) -> None:
    """In a worker: the supervisor's own restart of a container under its restart policy (nobody waits for
    an answer: `conn` is a placeholder; a failure goes to the supervisor's log)."""
    from minirun.runtime.container import stopped
    from minirun.runtime.supervisor.connections import Log

    conn.close()
    try:
        stopped.start_in_worker(payload["id"], decode_spec, supervisor, log_channel, by_policy=True)
    except MinirunError as exc:
        Log().line(f"container {payload['id']} was not restarted: {exc.msg}")


def _answer(conn: socket.socket, serve: Callable[[], str]) -> None:
    try:
        response = {"ok": True, "id": serve()}
    except MinirunError as exc:
        response = {"ok": False, "error": exc.msg, "hint": exc.hint, "code": exc.code}
    except Exception as exc:  # noqa: BLE001 - reported to the client, which prints it
        known = host_error(exc) if isinstance(exc, OSError) else None
        if known is not None:  # a sick host: full or read-only state or data dir
            response = {"ok": False, "error": known.msg, "hint": known.hint, "code": 125}
        else:
            response = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}", "code": 125}
    conn.sendall(json.dumps(response).encode() + b"\n")
    conn.close()


def warm() -> None:
    """In a spare worker (supervisor/spare.py): import everything serving a run request needs, before a
    request comes."""
    from minirun.net import attachment
    from minirun.runtime.container import run  # noqa: F401 - imported to be loaded now

    attachment.preload()


def run_detached(spec: ContainerSpec, supervisor: dict[str, Any], log_channel: socket.socket) -> str:
    """In a worker: create and start one detached container (see container/run.py); its id."""
    from minirun.runtime.container import run

    return run.run_detached(spec, supervisor, log_channel)


def teardown(record: dict[str, Any]) -> None:
    """In a teardown child: release everything of an ended container (see runtime/container/teardown.py)."""
    from minirun.runtime.container import teardown as container_teardown

    container_teardown.teardown(record)
