"""A supervisor outlives the code it was started from: upgrading minirun under it must not break containers.

The hole (issue 14 C10, seen live): the supervisor's forked workers and teardown children import modules
lazily from the disk, on top of the modules the supervisor loaded at start. After an upgrade that moved a
function, a child of an old supervisor failed with `ImportError`: a `run -d` was refused with an internal
error, and an ended container was never torn down (its address and veth stayed, and the supervisor never
went idle). These tests replace the code on disk under a running supervisor, as `pip install -U` does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import minirun as package
from tests.integration.conftest import host_links, ipam_reservations, minirun, records, wait_for

SOURCE = Path(package.__file__).resolve().parent
REPO = SOURCE.parent
# The last commit before runtime/supervisor/jobs.py: its supervisor reaches the rest of minirun through
# runtime.container.run_detached, runtime.gc.teardown and runtime.launch.exit_status.
BEFORE_JOBS = "4728bdf"


@pytest.fixture(autouse=True)
def _clean_up(clean_slate):
    yield


def install(target: Path) -> None:
    """Put the working tree's minirun package at target/minirun, replacing what is there (an upgrade)."""
    shutil.rmtree(target / "minirun", ignore_errors=True)
    shutil.copytree(SOURCE, target / "minirun", ignore=shutil.ignore_patterns("__pycache__"))


def old_code(target: Path, commit: str) -> None:
    if not (REPO / ".git").exists():
        pytest.fail(f"{REPO} is not a git checkout: the upgrade test needs commit {commit} from its history")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "minirun"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)


def detach(name: str, command: str, env: dict) -> str:
    result = minirun("run", "-d", "--name", name, "sh", "-c", command, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def supervisor_pid(state_dir: Path) -> int:
    (owner,) = {r["owner"]["pid"] for r in records(state_dir)}
    return owner


def supervisor_code(pid: int) -> str:
    """Where the supervisor process loaded minirun from (its PYTHONPATH)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"PYTHONPATH="))


def stop_and_remove_everything(state_dir: Path, names: list[str], env: dict) -> None:
    stopped = minirun("stop", "-t", "1", *names, env=env)
    assert stopped.returncode == 0, stopped.stderr
    for name in names:
        document = json.loads(minirun("inspect", name, env=env).stdout)[0]
        log = (state_dir / "supervisor.log").read_text()
        assert document["State"]["Status"] == "exited" and document["State"]["ExitCode"] == 137, (document, log)
    assert ipam_reservations(state_dir) == []  # torn down by the (old) supervisor's teardown child
    removed = minirun("rm", *names, env=env)
    assert removed.returncode == 0, removed.stderr
    assert records(state_dir) == []


def test_a_supervisor_from_the_previous_release_serves_and_tears_down_after_an_upgrade(tmp_path, state_dir):
    code = tmp_path / "code"
    code.mkdir()
    old_code(code, BEFORE_JOBS)
    env = {"PYTHONPATH": str(code)}
    detach("before", "echo before; sleep 600", env)
    supervisor = supervisor_pid(state_dir)
    assert supervisor_code(supervisor) == str(code)
    veths = [r["network"]["host_veth"] for r in records(state_dir)]

    install(code)  # the upgrade, under the running supervisor

    detach("after", "echo after; sleep 600", env)  # a worker of the old supervisor, on the new code
    assert {r["owner"]["pid"] for r in records(state_dir)} == {supervisor}
    wait_for(lambda: minirun("logs", "after", env=env).stdout == "after\n", what="the new container's log")
    assert minirun("logs", "before", env=env).stdout == "before\n"
    veths += [r["network"]["host_veth"] for r in records(state_dir) if r["name"] == "after"]
    stop_and_remove_everything(state_dir, ["before", "after"], env)
    wait_for(lambda: not set(veths) & set(host_links()), what="both veths gone")
    wait_for(lambda: not os.path.exists(f"/proc/{supervisor}"), what="the old supervisor idled out")


def test_a_child_of_a_supervisor_whose_code_changed_loads_the_new_code_whole(tmp_path, state_dir):
    """Without supervisor.jobs.fresh_code the new container module would import a name the supervisor's
    already-loaded (old) minirun.spec lacks: ImportError in the worker (`run -d` fails) and in the teardown
    child (the address is never released)."""
    code = tmp_path / "code"
    code.mkdir()
    install(code)
    env = {"PYTHONPATH": str(code)}
    detach("before", "echo before; sleep 600", env)
    supervisor = supervisor_pid(state_dir)

    install(code)  # the next release: spec gains a name that container and gc use at import time
    with open(code / "minirun" / "spec.py", "a") as spec:
        spec.write("\nUPGRADE_MARK = 'new'\n")
    for module in ("runtime/container/create.py", "runtime/container/teardown.py"):
        path = code / "minirun" / module
        path.write_text(path.read_text() + "\nfrom minirun.spec import UPGRADE_MARK  # noqa: E402\n")

    detach("after", "echo after; sleep 600", env)
    assert {r["owner"]["pid"] for r in records(state_dir)} == {supervisor}
    wait_for(lambda: minirun("logs", "after", env=env).stdout == "after\n", what="the new container's log")
    stop_and_remove_everything(state_dir, ["before", "after"], env)
