"""Which minirun processes may be in the middle of changing minirun's state: one file per process.

Every command reconciles first (`reconcile.reconcile`), and a full reconcile reads every record, address
reservation and name claim: its cost grows with the number of containers (1.3x slower `run --rm` with 200
detached containers up). Yet there is only something to reconcile when a process that changes state ended
before finishing (kill -9, a crash, a teardown step that failed) or when an owner of containers (a
foreground launcher, the supervisor) died. So a process enters its identity here, `PID-STARTTIME` (which
the kernel never gives to another process), before it changes anything, and takes it out only when it ends
having left nothing behind. A command that finds every entry alive has nothing to reconcile and skips the
full pass: the per-run cost stays flat however many containers run. An entry whose process is gone asks
for a full pass, and is taken out only by a full pass that left nothing pending for it.

An entry is an empty file; the directory is created on first use. Without the directory (a fresh state
root, or one written by a minirun that had no registry) the owners on record are unknown: a full pass
runs and enters them (`adopt`).

A process is (pid, start time): field 22 of https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html
"""

from __future__ import annotations

import atexit
import contextlib
import os

from minirun import paths, plan
from minirun.kernel import proc

_entered_as: str | None = None  # this process's entry, once made (a forked child has another pid)


def entry_name(pid: int, started: int) -> str:
    return f"{pid}-{started}"


def _identity_entry() -> str | None:
    started = proc.start_time(os.getpid())
    return None if started is None else entry_name(os.getpid(), started)


def enter() -> bool:
    """Enter this process (before it changes any state). False when the directory was new (the owners on
    record are unknown: the caller must run a full pass) or could not be written (a sick host: the caller
    runs a full pass, and whatever it changes fails with its own error)."""
    global _entered_as
    entry = _identity_entry()
    if entry is None:
        return False
    if _entered_as == entry:
        return True
    directory = paths.owners_dir()
    known = os.path.isdir(directory)
    try:
        _create(os.path.join(directory, entry))
    except OSError:
        return False
    _entered_as = entry
    atexit.register(leave)
    return known


def _create(path: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))


def adopt(owner: dict[str, int | None]) -> None:
    """Enter another process found owning something on record (a minirun from before this registry)."""
    pid, started = owner.get("pid"), owner.get("started")
    if pid is not None and started is not None:
        with contextlib.suppress(OSError):
            _create(os.path.join(paths.owners_dir(), entry_name(pid, started)))


# Written by a full pass that left something pending with no dead entry to answer for it (a container of a
# supervisor that died before this registry existed, found unwatched by `ps`): not a PID, so it counts as
# dead, and every command looks until a pass settles it.
PENDING = "pending"


def mark_pending() -> None:
    with contextlib.suppress(OSError):
        _create(os.path.join(paths.owners_dir(), PENDING))


def dead() -> list[str]:
    """The entries whose process has ended (a zombie has ended)."""
    try:
        names = os.listdir(paths.owners_dir())
    except OSError:
        return []
    found = []
    for name in names:
        pid, _, started = name.partition("-")
        if not (pid.isdigit() and started.isdigit()) or not proc.is_alive(int(pid), int(started)):
            found.append(name)
    return found


def forget(entries: list[str]) -> None:
    for name in entries:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(paths.owners_dir(), name))


def leave() -> None:
    """Take this process's entry out, unless a teardown or rollback step failed in it: then what it could not
    undo is still there, and the entry, now dead, makes the next command look (a full reconcile pass)."""
    global _entered_as
    entry = _identity_entry()
    if _entered_as is None or entry != _entered_as or plan.residue_left():
        return
    forget([entry])
    _entered_as = None


def keep() -> None:
    """This process ends leaving something a full pass must look at (the supervisor stopped while its
    containers run on): its entry stays, and being dead, makes the next command look."""
    global _entered_as
    _entered_as = None
