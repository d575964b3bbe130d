"""The CLI's side of the supervisor: start it on demand, send one request, read one response."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

from minirun import paths
from minirun.errors import MinirunError
from minirun.runtime.supervisor import protocol

CONNECT_TIMEOUT = 5.0
# The supervisor's entry point is in the CLI layer, which hands it the CLI's check of a `run -d` spec.
SUPERVISOR_MODULE = "minirun.cli.supervise"


def _connect() -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(paths.supervisor_socket())
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except OSError as exc:  # the state dir is sick (a file, unreadable...): name the path
        sock.close()
        raise OSError(exc.errno, exc.strerror, paths.supervisor_socket()) from None
    return sock


def _start_supervisor() -> None:
    os.makedirs(paths.state_root(), mode=0o700, exist_ok=True)
    with open(os.path.join(paths.state_root(), "supervisor.log"), "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", SUPERVISOR_MODULE],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )


def start_unless_running() -> None:
    """Start a supervisor in the background unless one answers. Reconcile calls it when it finds a container
    left running by a killed supervisor: the new one adopts it (adoption.py)."""
    sock = _connect()
    if sock is None:
        _start_supervisor()
    else:
        sock.close()


def _connect_or_start() -> socket.socket:
    sock = _connect()
    if sock is not None:
        return sock
    _start_supervisor()
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while time.monotonic() < deadline:
        sock = _connect()
        if sock is not None:
            return sock
        time.sleep(0.005)
    raise MinirunError(
        "the minirun supervisor did not start", hint=f"see {paths.state_root()}/supervisor.log", code=125
    )


def ensure_resolver() -> None:
    """Make sure the supervisor runs and serves DNS on every user network (it binds each gateway:53)."""
    response = request(protocol.sync_request())
    if not response.get("ok"):
        raise MinirunError("the minirun supervisor could not start the resolver", code=125)


def request(payload: dict[str, Any]) -> dict[str, Any]:
    """Send one request (request.sync_request / run_request) and return the supervisor's reply."""
    data = protocol.encode(payload)
    for _ in range(3):  # a supervisor that was just exiting for idleness drops the connection: retry
        sock = _connect_or_start()
        reply = b""
        with sock:
            # Refused before it read everything, the supervisor closes with our request unread: sendall may
            # fail, and recv reports a reset after its reply, which is still ours to read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(data)
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):
                    reply += chunk
        if not reply:
            time.sleep(0.05)
            continue
        answer = json.loads(reply)
        if not (answer.get("outdated") and not answer.get("busy")):
            return answer  # a busy outdated supervisor's refusal says what to do: the caller reports it
        # An idle supervisor from before an upgrade is exiting: the next attempt starts one on this code.
        _wait_gone(answer.get("pid"))
    raise MinirunError("the minirun supervisor did not answer", code=125)


def _wait_gone(pid: object, patience: float = CONNECT_TIMEOUT) -> None:
    deadline = time.monotonic() + patience
    while isinstance(pid, int) and os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.005)
