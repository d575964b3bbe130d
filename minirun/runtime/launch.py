"""Kept for supervisors started from code older than runtime/supervisor/jobs.py (issue 14): the daemon runs
`from minirun.runtime.launch import exit_status` when a container ends, after an upgrade too. Nothing else
imports this module; it goes with issue 15's version exchange (the code lives in container/launch.py)."""

from __future__ import annotations

from minirun.runtime import upgrade_guard  # noqa: F401 - first: a supervisor's upgrade (see there)

# isort: split
from minirun.kernel.proc import exit_status

__all__ = ["exit_status"]
