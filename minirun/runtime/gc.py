"""Kept for supervisors started from code older than runtime/supervisor/jobs.py (issue 14): their teardown
child runs `from minirun.runtime import gc; gc.teardown(record)` after an upgrade. Nothing else imports
this module; it goes with issue 15's version exchange, which replaces an outdated idle supervisor."""

from __future__ import annotations

from minirun.runtime import upgrade_guard  # noqa: F401 - first: a supervisor's upgrade (see there)

# isort: split
from minirun.runtime.container.teardown import teardown

__all__ = ["teardown"]
