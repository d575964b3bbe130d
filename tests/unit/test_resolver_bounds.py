"""Issue 12, hole 7: the resolver's forwarding is bounded and a failure to make a thread is not fatal.

The flood itself runs against the real supervisor in tests/integration/test_resolver_boundary.py; here the
one thing the machine cannot be made to do safely - refuse a new thread - is injected."""

from __future__ import annotations

import socket
import threading

import pytest

from minirun.runtime import resolver


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
