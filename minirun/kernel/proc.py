"""Process identity that survives PID reuse: (pid, start time in clock ticks since boot).

The start time is field 22 of /proc/PID/stat: https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html
"""

from __future__ import annotations

import os


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/PID/stat from field 3 (the state) on, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    return stat[stat.rindex(b")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, or None when the process is gone."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def is_alive(pid: int, started: int) -> bool:
    """True when `pid` still names the same process that started at `started`, and that process has not
    ended: a zombie (exited, not yet reaped by a parent that may never reap it) is dead."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in (b"Z", b"X") and int(fields[19]) == started


def parent(pid: int) -> int | None:
    """The parent's pid (field 4 of /proc/PID/stat), or None when the process is gone. A process cannot
    choose it: it changes only when the parent dies and the kernel re-parents the process."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def namespace_pids(pid: int | str) -> list[int] | None:
    """The process's pid in each PID namespace it is in, outermost (ours) first: /proc/PID/status NSpid.
    None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    return [int(field) for field in line.split()[1:]]
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def namespace_inits() -> list[int]:
    """Pids of the processes that are PID 1 of a PID namespace one level below ours: a container's first
    process, as the kernel numbers it (a process can neither renumber itself nor leave its PID namespace;
    one nested deeper, made inside a container, is two levels below)."""
    depth = len(namespace_pids("self") or [0])
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            numbers = namespace_pids(name)
            if numbers is not None and len(numbers) == depth + 1 and numbers[-1] == 1:
                found.append(int(name))
    return sorted(found)


def namespace_of(pid: int | str, kind: str) -> tuple[int, int] | None:
    """(device, inode) of the process's namespace of `kind` ("net", "pid"...), the namespace's identity;
    None when the process is gone."""
    try:
        st = os.stat(f"/proc/{pid}/ns/{kind}")
    except (FileNotFoundError, ProcessLookupError):
        return None
    return st.st_dev, st.st_ino


def flock_holders(path: str) -> set[int]:
    """Pids that hold a flock(2) on the file at `path`, as /proc/locks shows them."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return set()
    # "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF": pid, then MAJOR:MINOR:INODE (major, minor in hex)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4].isdigit():
            holders.add(int(fields[4]))
    return holders


def started_at(start_ticks: int) -> float:
    """A start time in clock ticks since boot (start_time) as seconds since the epoch."""
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    return boot + start_ticks / os.sysconf("SC_CLK_TCK")


def exit_status(wait_status: int) -> int:
    """Docker's convention for a waited-for process: its exit code, or 128+N when killed by signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code
