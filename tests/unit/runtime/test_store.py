"""runtime/store.py, the one place records are read and written (issue 14): what it returns for a missing,
a damaged and a foreign record, how names are claimed, and which records count as whose.

The rule under test everywhere: a record that cannot be read is never evidence that what it held is free.
store.load says "corrupt" (reconcile then sets it aside and keeps its holdings), it never says "none".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from minirun import paths
from minirun.errors import Conflict, NotFound
from minirun.runtime import model, store


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(paths.STATE_DIR_ENV, str(tmp_path / "state"))
    for directory in (paths.containers_dir(), paths.names_dir(), paths.pods_dir()):
        os.makedirs(directory, exist_ok=True)
    return tmp_path / "state"


def record(container_id: str, **fields) -> dict:
    return {"id": container_id, "name": f"n{container_id}", "status": "running", **fields}


def test_a_saved_record_loads_back_and_a_missing_one_is_none():
    store.save(record("a1"))
    assert store.load("a1") == record("a1")
    assert store.load("b2") is None


@pytest.mark.parametrize(
    "content",
    [b"{half", b"\xff\xfe", b"[1, 2]", b'{"id": "someone-else"}', b""],
    ids=["truncated", "not utf-8", "not an object", "another id", "empty"],
)
def test_a_record_that_cannot_be_read_as_its_own_is_corrupt_never_missing(content):
    Path(paths.container_record("c3")).write_bytes(content)
    assert store.load("c3") == {"id": "c3", "corrupt": True}
    assert {"id": "c3", "corrupt": True} in store.all_records()


def test_listing_skips_temp_files_and_set_aside_records_but_remembers_the_damaged():
    store.save(record("d4"))
    Path(paths.containers_dir(), ".d5.json.tmp").write_text("{}")  # a write in progress
    Path(paths.container_record("d6")).write_text("{")
    aside = store.set_aside("d6")
    assert aside and store.DAMAGED_MARK in aside and not os.path.exists(paths.container_record("d6"))
    assert [r["id"] for r in store.all_records()] == ["d4"]
    assert store.damaged_records() == {"d6": [aside]}
    assert store.set_aside("d6") is None  # gone already: nothing to move


def test_a_name_is_claimed_once_and_released_only_by_its_holder():
    store.claim_name("web", "e7")
    with pytest.raises(Conflict, match='"web" is already in use by container e7'):
        store.claim_name("web", "f8")
    store.release_name("web", "f8")  # not the holder: the claim stays
    assert store.read_name("web") == "e7" and store.name_claims() == {"web": "e7"}
    store.save(record("e7", name="web"))
    store.remove(record("e7", name="web"))
    assert store.read_name("web") is None and store.load("e7") is None


def test_owner_alive_needs_the_same_process_not_just_the_same_pid():
    me = model.owner_identity()
    assert store.owner_alive({"owner": me})
    assert not store.owner_alive({"owner": {**me, "started": me["started"] + 1}})  # pid reused
    assert not store.owner_alive({"owner": {"pid": "1", "started": None}})  # a damaged owner


def pod(name: str, **fields) -> dict:
    return {"id": f"pod-{name}", "name": name, "status": "ready", **fields}


def test_a_damaged_pod_record_raises_and_is_never_taken_for_no_pod():
    Path(paths.pod_record("good")).write_text(json.dumps(pod("good")))
    Path(paths.pod_record("bad")).write_text(json.dumps({"name": "other"}))
    assert store.load_pod("good") == pod("good") and store.load_pod("none") is None
    with pytest.raises(store.DamagedPod):
        store.load_pod("bad")
    assert [p["name"] for p in store.all_pods()] == ["good"]  # listings skip it; reconcile sets it aside
    os.rename(paths.pod_record("bad"), f"{paths.pods_dir()}/bad{store.DAMAGED_MARK}x")
    assert store.damaged_pod_names() == ["bad"] and store.damaged_pods_exist()
    with pytest.raises(NotFound, match="its record is damaged"):
        store.find_pod("bad")


def test_a_pod_still_being_created_is_not_found_by_its_members():
    Path(paths.pod_record("early")).write_text(json.dumps(pod("early", status="creating")))
    with pytest.raises(NotFound, match="no such pod: early"):
        store.find_pod("early")


def test_published_ports_counts_live_containers_and_pods_only():
    mapping = ["tcp", "0.0.0.0", 8080, 80]
    store.save(record("g9", ports=[mapping]))
    store.save(record("h0", status="exited", ports=[["tcp", "0.0.0.0", 8081, 80]]))
    Path(paths.pod_record("p")).write_text(json.dumps(pod("p", ports=[["tcp", "0.0.0.0", 9090, 90]])))
    published = store.published_ports()
    assert set(published) == {"container ng9", "pod p"}
    assert [tuple(m) for m in published["container ng9"]] == [tuple(mapping)]
    assert "container ng9" not in store.published_ports(exclude="g9")


def test_pod_members_are_the_records_that_name_the_pod():
    store.save(record("i1", pod="p"))
    store.save(record("j2"))
    assert [r["id"] for r in store.pod_members("p")] == ["i1"]
