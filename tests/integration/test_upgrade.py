"""A supervisor outlives the code it was started from: upgrading minirun under it must not break containers.

The hole (issue 14 C10, seen live): the supervisor's forked workers and teardown children import modules
lazily from the disk, on top of the modules the supervisor loaded at start. After an upgrade that moved a
function, a child of an old supervisor failed with `ImportError`: a `run -d` was refused with an internal
error, and an ended container was never torn down (its address and veth stayed, and the supervisor never
went idle). These tests replace the code on disk under a running supervisor, as `pip install -U` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
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


def test_the_teardown_child_of_a_supervisor_whose_code_changed_loads_the_new_code_whole(tmp_path, state_dir):
    """A supervisor outdated by an upgrade starts no new container (below), but its containers still end and
    are torn down by a child it forks. Without supervisor.jobs.fresh_code the new teardown module would
    import a name the supervisor's already-loaded (old) minirun.spec lacks: ImportError in the teardown child,
    so the exit code is lost (255) and the address never released."""
    code = tmp_path / "code"
    code.mkdir()
    install(code)
    env = {"PYTHONPATH": str(code)}
    detach("before", "echo before; sleep 600", env)
    supervisor = supervisor_pid(state_dir)

    install(code)  # the next release: spec gains a name that the teardown uses at import time
    with open(code / "minirun" / "spec.py", "a") as spec:
        spec.write("\nUPGRADE_MARK = 'new'\n")
    path = code / "minirun" / "runtime" / "container" / "teardown.py"
    path.write_text(path.read_text() + "\nfrom minirun.spec import UPGRADE_MARK  # noqa: E402\n")

    assert supervisor_pid(state_dir) == supervisor
    stop_and_remove_everything(state_dir, ["before"], env)  # exit code 137, address released, record gone


# Issue 15's version exchange, first slice: a supervisor notices that the code on disk is not the code it runs.
LINGER = {"MINIRUN_SUPERVISOR_IDLE": "60"}  # so an idle supervisor is still there when the next run comes


def upgrade_in_place(code: Path) -> None:
    """What `pip install -U` does to the files of a running supervisor (here: one module changes)."""
    with open(code / "minirun" / "spec.py", "a") as spec:
        spec.write("\n# the next release\n")


def stop_supervisor(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what=f"supervisor {pid} gone")


def lingering_supervisor_from_a_copy(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of this tree as the installed code, and a supervisor started from it with a container "first"."""
    code = tmp_path / "code"
    code.mkdir()
    install(code)
    env = {"PYTHONPATH": str(code), **LINGER}
    detach("first", "sleep 600", env)
    return code, env


def test_an_idle_supervisor_from_before_an_upgrade_makes_way_for_one_on_the_new_code(tmp_path, state_dir):
    code, env = lingering_supervisor_from_a_copy(tmp_path)
    old = supervisor_pid(state_dir)
    assert minirun("rm", "-f", "first", env=env).returncode == 0
    assert os.path.exists(f"/proc/{old}")  # idle, lingering

    upgrade_in_place(code)
    detach("second", "echo second; sleep 600", env)
    new = supervisor_pid(state_dir)
    try:
        assert new != old and not os.path.exists(f"/proc/{old}")
        wait_for(lambda: minirun("logs", "second", env=env).stdout == "second\n", what="second's log")
        assert "the minirun code on disk changed" in (state_dir / "supervisor.log").read_text()
        assert minirun("rm", "-f", "second", env=env).returncode == 0
    finally:
        stop_supervisor(new)


def test_a_busy_supervisor_from_before_an_upgrade_refuses_new_containers_in_one_line(tmp_path, state_dir):
    """Its containers cannot be handed over, and it must not set up a container with code that is gone:
    `run -d` fails with one line naming the fix, nothing is created, and its own container is unharmed."""
    code, env = lingering_supervisor_from_a_copy(tmp_path)
    old = supervisor_pid(state_dir)

    upgrade_in_place(code)
    refused = minirun("run", "-d", "--name", "second", "sleep", "600", env=env)
    assert refused.returncode == 125, refused
    assert refused.stderr.count("\n") == 1 and "before it was upgraded" in refused.stderr, refused.stderr
    assert "stop or remove its containers" in refused.stderr
    assert [r["name"] for r in records(state_dir)] == ["first"] and not (state_dir / "names" / "second").exists()
    assert minirun("inspect", "-f", "{{.State.Running}}", "first", env=env).stdout.strip() == "true"

    stop_and_remove_everything(state_dir, ["first"], env)  # the old supervisor still tears down its own
    detach("third", "sleep 600", env)  # idle now: replaced
    new = supervisor_pid(state_dir)
    try:
        assert new != old
        assert minirun("rm", "-f", "third", env=env).returncode == 0
    finally:
        stop_supervisor(new)
