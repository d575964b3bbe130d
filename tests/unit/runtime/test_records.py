"""Records written by an earlier release read back unchanged (issue 14: "the state layout on disk stays
readable, so running containers survive an upgrade").

tests/golden/records/ holds records written by minirun at 7c26dc8 (before the runtime redesign): containers
on the default bridge with a published port, with --network none, in a pod, exited with a code, on a user
network with --init, from an image with --read-only; a pod, a pod sharing its PID namespace; a user network.
Each must load through the one store as what it is (not corrupt), hold only keys the model knows, with
the JSON types the model gives them, and be written back byte for byte. A new record field fails here
until the model names it; a rename or a format change fails here before it strands a live container.
"""

from __future__ import annotations

import json
import os
import shutil
import types
import typing
from pathlib import Path

import pytest

from minirun import paths
from minirun.net import network as networks
from minirun.runtime import model, store

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "records"
CONTAINERS = sorted(GOLDEN.glob("container-*.json"))
PODS = sorted(GOLDEN.glob("pod-*.json"))


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.STATE_DIR_ENV, str(tmp_path / "state"))
    for directory in (paths.containers_dir(), paths.pods_dir(), os.path.dirname(networks.record_path("x"))):
        os.makedirs(directory, exist_ok=True)


def json_types(annotation) -> set[type]:
    """The JSON types a field's annotation allows (StrEnum -> str, TypedDict -> dict, X | None -> both)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(json_types(a) for a in typing.get_args(annotation)))
    if origin is not None:
        return {origin}
    if isinstance(annotation, type) and issubclass(annotation, str):
        return {str}
    if typing.is_typeddict(annotation):
        return {dict}
    return {annotation}  # typing.Any: any JSON value


def check_against(record: dict, schema: type) -> None:
    fields = typing.get_type_hints(schema)
    assert set(record) <= set(fields), f"keys the model does not know: {sorted(set(record) - set(fields))}"
    for key, value in record.items():
        allowed = json_types(fields[key])
        assert type(value) in allowed or typing.Any in allowed, (key, value, allowed)


def test_the_golden_set_covers_every_kind_of_record():
    names = {p.stem for p in GOLDEN.glob("*.json")}
    assert {"container-bridge", "container-none", "container-member", "container-exited", "container-image"} <= names
    assert {"pod-web", "pod-shared", "network-user"} <= names


@pytest.mark.parametrize("golden", CONTAINERS, ids=lambda p: p.stem)
def test_a_container_record_of_an_earlier_release_reads_and_writes_back_unchanged(golden):
    written = golden.read_bytes()
    record_id = json.loads(written)["id"]
    shutil.copy(golden, paths.container_record(record_id))
    record = store.load(record_id)
    assert record is not None and not record.get("corrupt")
    check_against(record, model.ContainerRecord)
    assert model.container_status(record) is not None  # a status the model knows
    os.unlink(paths.container_record(record_id))
    store.save(record)
    assert Path(paths.container_record(record_id)).read_bytes() == written


@pytest.mark.parametrize("golden", PODS, ids=lambda p: p.stem)
def test_a_pod_record_of_an_earlier_release_reads_and_writes_back_unchanged(golden):
    written = golden.read_bytes()
    name = json.loads(written)["name"]
    shutil.copy(golden, paths.pod_record(name))
    pod = store.load_pod(name)
    assert pod is not None and model.is_ready(pod)
    check_against(pod, model.PodRecord)
    os.unlink(paths.pod_record(name))
    store.save_pod(pod)
    assert Path(paths.pod_record(name)).read_bytes() == written


def test_a_network_record_of_an_earlier_release_reads_and_writes_back_unchanged():
    golden = GOLDEN / "network-user.json"
    shutil.copy(golden, networks.record_path("user"))
    network = networks.load("user")
    assert network is not None and str(network.subnet) == "10.99.0.0/24" and network.bridge == "mr-user"
    on_disk = json.loads(golden.read_text())
    # The Network a command works with is what the record says (id and created are the record's own).
    assert networks.to_record(network) == {k: v for k, v in on_disk.items() if k not in ("id", "created")}


def test_a_record_with_a_key_the_model_does_not_know_fails_the_check():
    """The check is not vacuous: a field added to records but not to the model is caught."""
    with pytest.raises(AssertionError, match="keys the model does not know"):
        check_against({"id": "x", "restart_policy": "always"}, model.ContainerRecord)
    with pytest.raises(AssertionError):
        check_against({"id": 7}, model.ContainerRecord)  # a known key with the wrong JSON type
