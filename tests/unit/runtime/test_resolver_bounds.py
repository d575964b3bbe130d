"""Issue 12, hole 7: the resolver's forwarding is bounded and a failure to make a thread is not fatal.

The flood itself runs against the real supervisor in tests/integration/test_resolver_boundary.py; here the
one thing the machine cannot be made to do safely - refuse a new thread - is injected."""

from __future__ import annotations

import socket
import threading

import pytest

from minirun.runtime.supervisor import resolver


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield a, b
    a.close()
    b.close()


def test_no_thread_to_be_had_means_servfail_not_a_dead_supervisor(monkeypatch, pair):
    """When no thread can be made ("can't start new thread"), submit says no (the caller answers
    SERVFAIL), nothing raises, and the reason is kept for the serving thread to log."""

    def refuse(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    forwarder = resolver.Forwarder(workers=2, depth=4)
    assert forwarder.submit(b"query", None, pair[0]) is False
    assert forwarder.workers == [] and "can't start new thread" in forwarder.messages[0]


def test_one_network_cannot_starve_the_others_forwarding(monkeypatch, pair):
    """Review of hole 7: the forwarding pool was shared first come, first served: a container flooding an
    upstream that never answers took every worker and queue slot, and another network's names got SERVFAIL.
    A network gets at most its share of workers and of the queue, and the workers serve networks in turn."""
    release = threading.Event()
    served = []

    def fake_forward(packet, reply_to, sock):
        if packet.startswith(b"flood"):
            release.wait(10)  # an upstream that does not answer
        served.append(packet)

    monkeypatch.setattr(resolver, "forward", fake_forward)
    forwarder = resolver.Forwarder(workers=3, depth=8, per_network_depth=4, per_network_workers=2)
    accepted = [forwarder.submit(b"flood%d" % i, None, pair[0], "noisy") for i in range(8)]
    assert accepted == [True] * 4 + [False] * 4  # its share of the queue, then SERVFAIL
    assert forwarder.submit(b"victim", None, pair[0], "quiet")  # room in the pool for another network
    deadline = threading.Event()
    for _ in range(200):
        if b"victim" in served:
            break
        deadline.wait(0.01)
    assert served == [b"victim"]  # answered while the flood still holds two workers
    release.set()
