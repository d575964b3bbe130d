"""A plan in phases (runtime/phases.py) and the netns handle its attach phase reads (runtime/network_plan.py).

The hole (issue 14 C18): `run --dry-run` and `pod create --dry-run` built the network plan a second time,
with None sockets, beside the one a run built after the fork; nothing tied the two together, so what a dry
run told could drift from what a run did. Now one list of phases serves both: these tests pin that a run
plans a phase only after the previous one ran (so it reads what that one made), that each phase numbers
its own steps as a run always has (`step k/N`), and that a dry run describes every phase and applies none.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket

import pytest

from minirun.errors import StepError
from minirun.plan import Narrator, Step
from minirun.runtime.network_plan import NetnsHandle
from minirun.runtime.phases import describe_phases, run_phases


def two_phases(made: dict, applied: list[str]):
    def make() -> None:
        made["netns"] = "/proc/42/ns/net"
        applied.append("namespaces")

    def attach_steps() -> list[Step]:
        label = made.get("netns", "<pid>")  # read when the phase is planned
        return [
            Step("veth", lambda: applied.append("veth"), lambda: [f"ip link add ... netns {label}"]),
            Step("eth0", lambda: applied.append("eth0"), lambda: [f"nsenter --net={label} ip link set eth0 up"]),
        ]

    return [lambda: [Step("namespaces", make, lambda: ["unshare --net ..."])], attach_steps]


def test_a_run_plans_each_phase_after_the_previous_one_ran():
    made: dict = {}
    applied: list[str] = []
    out = io.StringIO()
    with contextlib.ExitStack() as undo:
        run_phases(two_phases(made, applied), undo, narrator=Narrator(explain=True, stream=out))
    assert applied == ["namespaces", "veth", "eth0"]
    assert "nsenter --net=/proc/42/ns/net ip link set eth0 up" in out.getvalue()


def test_a_dry_run_describes_every_phase_and_applies_none():
    made: dict = {}
    applied: list[str] = []
    out = io.StringIO()
    tail = [Step("exec", lambda: None, lambda: ["exec true"])]
    describe_phases(two_phases(made, applied), Narrator(explain=True, stream=out), tail=tail)
    assert applied == [] and made == {}
    steps = [line for line in out.getvalue().splitlines() if line.startswith("minirun: step")]
    assert steps == [f"minirun: step {k}: {name}" for k, name in enumerate(["namespaces", "veth", "eth0", "exec"], 1)]
    assert "nsenter --net=<pid> ip link set eth0 up" in out.getvalue()


def test_a_failure_is_numbered_within_its_phase_and_rolls_back_both():
    """As before the phases: the namespaces step is step 1/1, an attach step k/N of the attach steps."""
    undone: list[str] = []

    def boom() -> None:
        raise OSError("no")

    phases = [
        lambda: [Step("namespaces", lambda: lambda: undone.append("namespaces"))],
        lambda: [Step("veth", lambda: lambda: undone.append("veth")), Step("eth0", boom)],
    ]
    with pytest.raises(StepError, match=r"step 2/2 \(eth0\) failed"), contextlib.ExitStack() as undo:
        run_phases(phases, undo)
    assert undone == ["veth", "namespaces"]


def test_the_netns_handle_is_a_placeholder_until_filled():
    handle = NetnsHandle("/proc/<pid>/ns/net")
    assert (handle.label, handle.rtnl, handle.fd) == ("/proc/<pid>/ns/net", None, -1)  # a dry run opens nothing
    netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    try:
        handle.fill(f"/proc/{os.getpid()}/ns/net", netlink)
        fd = handle.fd
        assert fd >= 0 and handle.fd == fd  # opened once, on first use
        assert os.readlink(f"/proc/self/fd/{fd}") == os.readlink("/proc/self/ns/net")
        handle.close()
        assert not os.path.exists(f"/proc/self/fd/{fd}")
    finally:
        handle.close()
        netlink.close()
