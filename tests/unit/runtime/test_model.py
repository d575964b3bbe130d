"""The container and pod state machines (runtime/model.py): every allowed move, and the rest refused."""

from __future__ import annotations

import itertools
import json

import pytest

from minirun.errors import Conflict
from minirun.runtime.model import (
    CONTAINER_TRANSITIONS,
    ContainerStatus,
    PodStatus,
    container_status,
    is_at_rest,
    is_live,
    move_container,
    move_pod,
)

# `start` takes a created (`create`) or exited container through creating again, as Docker's does.
ALLOWED = {
    ("created", "creating"),
    ("creating", "running"),
    ("creating", "exited"),
    ("running", "exited"),
    ("exited", "exited"),
    ("exited", "creating"),
}


@pytest.mark.parametrize(("before", "after"), list(itertools.product(ContainerStatus, ContainerStatus)))
def test_container_moves(before: ContainerStatus, after: ContainerStatus):
    record = {"id": "abc", "status": before.value}
    if (before.value, after.value) in ALLOWED:
        assert move_container(record, after, exit_code=3)["status"] == after.value
        assert record["exit_code"] == 3
    else:
        with pytest.raises(Conflict, match=f"cannot go from '{before.value}' to '{after.value}'"):
            move_container(record, after)
        assert record == {"id": "abc", "status": before.value}  # untouched


def test_the_table_is_the_documented_one():
    table = {(a.value, b.value) for a, targets in CONTAINER_TRANSITIONS.items() for b in targets}
    assert table == ALLOWED


def test_a_record_without_a_known_status_moves_nowhere():
    for record in ({"id": "x"}, {"id": "x", "status": "paused"}, {"id": "x", "corrupt": True}):
        assert container_status(record) is None and is_live(record)
        with pytest.raises(Conflict):
            move_container(dict(record), ContainerStatus.EXITED)


def test_pod_moves():
    pod = {"name": "web", "status": "creating"}
    assert move_pod(pod, PodStatus.READY)["status"] == "ready"
    for to in PodStatus:
        with pytest.raises(Conflict):
            move_pod(dict(pod), to)  # ready is final: removal deletes the record


def test_created_and_exited_hold_nothing_live():
    """What reconcile, the address and veth owners and the supervisor's adoption leave alone."""
    for status in ("created", "exited"):
        assert not is_live({"id": "x", "status": status}) and is_at_rest({"id": "x", "status": status})
    for status in ("creating", "running"):
        assert is_live({"id": "x", "status": status}) and not is_at_rest({"id": "x", "status": status})


def test_statuses_are_written_as_the_plain_strings_records_always_had():
    record = move_container({"id": "a", "status": "creating"}, ContainerStatus.RUNNING)
    assert json.dumps(record) == '{"id": "a", "status": "running"}'
    assert json.loads(json.dumps(record))["status"] == ContainerStatus.RUNNING
