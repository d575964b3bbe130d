"""Issue 13, item 1: the cleanup every command runs first (reconcile) must never harm the living.

It read a record while it was still `creating` (owned by the supervisor's worker, or by a `pod create`),
checked the owner later, after the owner had handed over and exited, and tore down without reading
again: detached containers and healthy pods were lost under ordinary parallel use. Here other commands
run their reconcile with a pause between reading the state and acting on it (MINIRUN_TEST_RECONCILE_PAUSE,
a test-only hook), in parallel with the commands that create, for many rounds: nothing may be lost.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.integration.conftest import minirun

pytestmark = pytest.mark.reliability

ROUNDS = 200


@contextmanager
def churning(commands: list[tuple[str, ...]], pause: float) -> Iterator[None]:
    """Other minirun commands, one thread each, looping until the body ends; their reconcile pauses."""
    stop = threading.Event()
    env = {"MINIRUN_TEST_RECONCILE_PAUSE": str(pause)}

    def loop(command: tuple[str, ...]) -> None:
        while not stop.is_set():
            minirun(*command, env=env)

    threads = [threading.Thread(target=loop, args=(command,), daemon=True) for command in commands]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)


def running_ids() -> set[str]:
    return {json.loads(row)["ID"] for row in minirun("ps", "--format", "json").stdout.splitlines()}


def test_detached_containers_survive_a_reconcile_that_read_them_while_creating(clean_slate):
    """`run -d` beside `ps -a` and `gc`, whose reconcile pauses 0.1 s between reading records and
    checking their owners: every container started stays running, with its record."""
    lost = []
    with churning([("ps", "-a"), ("gc",)], pause=0.1):
        for _ in range(ROUNDS):
            started = minirun("run", "-d", "sleep", "300")
            assert started.returncode == 0, started.stderr
            container_id = started.stdout.strip()
            if container_id[:12] not in {i[:12] for i in running_ids()}:
                lost.append(container_id)
            minirun("rm", "-f", container_id)
    assert lost == [], f"{len(lost)} of {ROUNDS} detached containers lost"


def test_pods_survive_a_reconcile_that_read_them_while_creating(clean_slate):
    """`pod create` and `run -d --pod` (which creates its pod) beside `pod ls` and `ps -a`, whose reconcile
    pauses 0.3 s: every pod stays ready and its member keeps its eth0."""
    lost = []
    with churning([("pod", "ls"), ("ps", "-a")], pause=0.3):
        for round_ in range(ROUNDS):
            name = f"p{round_}"
            if round_ % 2:
                created = minirun("pod", "create", name)
            else:
                created = minirun("run", "-d", "--pod", name, "sleep", "300")
            assert created.returncode == 0, created.stderr
            shown = minirun("pod", "inspect", name)
            member = minirun("run", "--rm", "--pod", name, "ip", "-br", "link", "show", "eth0")
            if shown.returncode != 0 or member.returncode != 0 or "eth0" not in member.stdout:
                lost.append(name)
            minirun("pod", "rm", "-f", name)
    assert lost == [], f"{len(lost)} of {ROUNDS} pods lost"
