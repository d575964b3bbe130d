"""Process identity that survives PID reuse: (pid, start time in clock ticks since boot)."""

from __future__ import annotations


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def is_alive(pid: int, started: int) -> bool:
    """True when `pid` still names the same process that started at `started`."""
    return start_time(pid) == started
