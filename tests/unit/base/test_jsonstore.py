"""minirun/jsonstore.py: how every record is written and listed."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from minirun import jsonstore


def test_record_names_skip_dotfiles_and_other_files(tmp_path: Path):
    for name in ("b.json", "a.json", ".a.json.123.tmp", ".hidden.json", "notes.txt", "c.json.damaged-2026"):
        (tmp_path / name).write_text("{}")
    assert jsonstore.record_names(str(tmp_path)) == ["a", "b"]
    assert jsonstore.record_names(str(tmp_path / "missing")) == []


def test_write_atomic_replaces_whole_and_leaves_no_temp(tmp_path: Path):
    path = tmp_path / "deep" / "x.json"
    jsonstore.write_atomic(str(path), {"b": 1, "a": [1]})
    assert path.read_text() == '{\n "a": [\n  1\n ],\n "b": 1\n}'  # sorted, one per line: records diff well
    jsonstore.write_text_atomic(str(path), json.dumps({"c": 2}), durable=False)
    assert json.loads(path.read_text()) == {"c": 2}
    assert sorted(os.listdir(path.parent)) == ["x.json"]


def test_a_record_that_is_not_json_leaves_the_old_one_and_no_temp(tmp_path: Path):
    path = tmp_path / "x.json"
    jsonstore.write_atomic(str(path), {"old": True})
    with pytest.raises(TypeError):
        jsonstore.write_atomic(str(path), {"new": object()})
    assert json.loads(path.read_text()) == {"old": True}
    assert sorted(os.listdir(tmp_path)) == ["x.json"]


def test_a_failed_write_names_the_record(tmp_path: Path):
    """A sick host (here: the directory is a file) gets an OSError naming the record, for errors.host_error."""
    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(OSError) as failed:
        jsonstore.write_atomic(str(tmp_path / "state" / "x.json"), {"a": 1})
    assert failed.value.errno in (errno.ENOTDIR, errno.EEXIST)
    assert sorted(os.listdir(tmp_path)) == ["state"]


def test_create_atomic_is_exclusive(tmp_path: Path):
    path = str(tmp_path / "claim")
    assert jsonstore.create_atomic(path, "first") is True
    assert jsonstore.create_atomic(path, "second") is False
    assert Path(path).read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["claim"]


def test_sweep_removes_only_temp_files_of_dead_writers(tmp_path: Path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f".a.json.{dead.pid}.tmp").write_text("half")
    (tmp_path / f".b.json.{os.getpid()}.tmp").write_text("being written")
    (tmp_path / "c.json").write_text("{}")
    assert jsonstore.sweep_temp_files(str(tmp_path)) == [f".a.json.{dead.pid}.tmp"]
    assert sorted(os.listdir(tmp_path)) == [f".b.json.{os.getpid()}.tmp", "c.json"]
