"""Issue 13: `kill -9` of every long-running verb at random moments, then the next minirun command (its
reconcile) and the ordinary removals: nothing may be left - no veth, address, record, name, pod, netns pin,
mount or directory (the autouse leak check asserts what the kernel and the state root show).

The moments are drawn from a fixed seed, so a failure can be replayed; each kill lands somewhere between
the command's start and, at the latest, its end (a kill after the end is a plain removal)."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.integration.conftest import minirun, remove_everything, spawn

pytestmark = pytest.mark.reliability

ROUNDS = 15
VERBS = {
    "run": lambda i: ("run", "--rm", "sleep", "5"),
    "run -d": lambda i: ("run", "-d", "--name", f"d{i}", "sleep", "5"),
    "run --image": lambda i: ("run", "--rm", "--image", "busybox", "sleep", "5"),
    "rm": lambda i: ("rm", "-f", f"victim{i}"),
    "pod create": lambda i: ("pod", "create", f"p{i}"),
    "pod rm": lambda i: ("pod", "rm", "-f", f"victim{i}"),
    "network create": lambda i: ("network", "create", f"n{i}"),
    "network rm": lambda i: ("network", "rm", f"victim{i}"),
}
# What a removal verb needs to exist before it is killed half-way.
SETUP = {
    "rm": lambda i: ("run", "-d", "--name", f"victim{i}", "sleep", "30"),
    "pod rm": lambda i: ("pod", "create", f"victim{i}"),
    "network rm": lambda i: ("network", "create", f"victim{i}"),
}


@pytest.mark.parametrize("verb", list(VERBS))
def test_kill_9_anywhere_leaves_nothing(verb: str, busybox_image, clean_slate):
    chance = random.Random(f"kill-9 {verb}")
    for i in range(ROUNDS):
        if verb in SETUP:
            assert minirun(*SETUP[verb](i)).returncode == 0
        victim = spawn(*VERBS[verb](i))
        time.sleep(chance.uniform(0, 0.25))  # the moment of the kill, not a wait for a condition
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        # The next command cleans up after the dead one: it must itself work, in one go.
        listed = minirun("ps", "-a")
        assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    remove_everything()
    assert minirun("gc").returncode == 0
    assert not [n for n in os.listdir("/run/netns") if n.startswith("minirun-")]
