"""A container, from its creation to its teardown: create.py (validate, record, fork, attach), run.py
(foreground, or detached in a supervisor worker), config.py (what it sees and may do, decided before it
forks), child.py and launch.py (its first process), execute.py (`exec`), control.py (stop, kill, rm),
teardown.py (the one teardown).

This package's `run_detached` is kept for supervisors started from code older than runtime/supervisor/jobs.py
(issue 14): their worker runs `from minirun.runtime import container; container.run_detached(...)` after an
upgrade. It goes with issue 15's version exchange.
"""

from __future__ import annotations

from typing import Any

from minirun.runtime import upgrade_guard  # noqa: F401 - first: a supervisor's upgrade (see there)


def __getattr__(name: str) -> Any:
    # Loaded only when an old supervisor asks: importing the package stays free for everyone else.
    if name == "run_detached":
        from minirun.runtime.container.run import run_detached

        return run_detached
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
