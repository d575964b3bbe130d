"""A plan in phases, for what a later phase's steps read from an earlier one's (the netns the namespaces step
makes, the attach steps use): each phase is planned when it starts. `--dry-run` describes every phase, unrun
and with placeholders; a run executes them one by one, each numbering its own steps (`step k/N`), so a
failure names its step within its phase, as it always has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from minirun.plan import Narrator, Step, Timing, describe, run_plan

Phase = Callable[[], list[Step]]


def describe_phases(phases: Iterable[Phase], narrator: Narrator | None, tail: Iterable[Step] = ()) -> None:
    """--dry-run: every step of every phase, then `tail` (what follows the plan, e.g. the exec)."""
    describe([*(step for phase in phases for step in phase()), *tail], narrator)


def run_phases(
    phases: Iterable[Phase],
    undo: contextlib.ExitStack,
    timings: list[Timing] | None = None,
    narrator: Narrator | None = None,
) -> None:
    """Plan and run each phase in turn (plan.run_plan), its undos on `undo`."""
    for phase in phases:
        run_plan(phase(), undo, timings, narrator)
