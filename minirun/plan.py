"""A plan is an ordered list of steps; each step may leave an undo behind. Failure rolls back in reverse.

The same Step objects produce `--timings`, and each carries the command a person would type for it
(`ip link add …`), so what minirun explains is what it executes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

from minirun.errors import StepError, TeardownError

Undo = Callable[[], object]

# Tests set this to a step name to make the run fail right after that step (CNI's debugPostIPAMError).
FAULT_INJECTION_ENV = "MINIRUN_TEST_FAIL_AFTER_STEP"


def _nothing_to_explain() -> list[str]:
    return []


class Step(NamedTuple):
    name: str
    apply: Callable[[], Undo | None]
    explain: Callable[[], list[str]] = _nothing_to_explain


class Timing(NamedTuple):
    name: str
    seconds: float


class Narrator:
    """--explain / --dry-run / -v: tells, on stderr, what each step does as a person would type it.

    It only ever prints Step.explain(), so the explanation is the plan that executes. With --explain the
    text is produced after the step ran, so it shows the real values (the address IPAM handed out).
    """

    def __init__(self, *, explain: bool = False, verbose: bool = False, stream=None) -> None:
        self.explain = explain
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self.count = 0

    def step(self, step: Step, seconds: float | None = None) -> None:
        self.count += 1
        if not (self.explain or self.verbose):
            return
        took = f" ({seconds * 1000:.1f} ms)" if seconds is not None and self.verbose else ""
        print(f"minirun: step {self.count}: {step.name}{took}", file=self.stream)
        if self.explain:
            for command in step.explain():
                for line in command.splitlines():
                    print(f"    {line}", file=self.stream)

    @classmethod
    def for_flags(cls, *, explain: bool = False, dry_run: bool = False, verbose: bool = False) -> Narrator | None:
        """The one way a command's flags make a narrator: --dry-run explains (it has nothing else to show);
        None when nothing is to be told."""
        if not (explain or dry_run or verbose):
            return None
        return cls(explain=explain or dry_run, verbose=verbose)

    def describe(self, steps: list[Step]) -> None:
        """--dry-run: every step, nothing applied; values not known yet are <placeholders>."""
        for step in steps:
            self.step(step)


def describe(steps: list[Step], narrator: Narrator | None) -> None:
    """--dry-run: tell `steps` through `narrator` (one that explains when the caller made none)."""
    (narrator or Narrator(explain=True)).describe(steps)


# Set when a teardown or rollback step of this process failed: what it could not undo is still on the host,
# so the process must not report itself as having left nothing behind (runtime.owners.leave).
_residue = False


def residue_left() -> bool:
    return _residue


def _note_residue() -> None:
    global _residue
    _residue = True


def report_undo_failure(step: str, exc: BaseException) -> None:
    _note_residue()
    print(f"minirun: warning: rollback of '{step}' failed: {exc}", file=sys.stderr)


def run_plan(
    steps: list[Step],
    undo: contextlib.ExitStack,
    timings: list[Timing] | None = None,
    narrator: Narrator | None = None,
) -> None:
    """Apply `steps` in order, pushing each undo onto `undo` (the caller commits or unwinds it).

    On failure StepError names the failed step; unwinding `undo` (the caller's `with`) then rolls back the
    steps applied so far in reverse.
    """
    for index, step in enumerate(steps, 1):
        started = time.perf_counter()
        try:
            inverse = step.apply()
        except Exception as exc:
            raise StepError(index, len(steps), step.name, exc) from exc
        if inverse is not None:
            undo.callback(_guarded, step.name, inverse)
        seconds = time.perf_counter() - started
        if timings is not None:
            timings.append(Timing(step.name, seconds))
        if narrator is not None:
            narrator.step(step, seconds)
        if os.environ.get(FAULT_INJECTION_ENV) == step.name:
            raise StepError(index, len(steps), step.name, RuntimeError(f"failure injected by {FAULT_INJECTION_ENV}"))


def run_best_effort(steps: list[Step], what: str, narrator: Narrator | None = None) -> None:
    """Teardown: run every step even if some fail (already gone counts as done); raise TeardownError
    listing all failures at the end (netavark's NetavarkErrorList, CNI DEL)."""
    errors = []
    for step in steps:
        started = time.perf_counter()
        try:
            step.apply()
        except Exception as exc:  # collect and carry on
            errors.append(f"{step.name}: {exc}")
        if narrator is not None:
            narrator.step(step, time.perf_counter() - started)
    if errors:
        _note_residue()
        raise TeardownError(what, errors)


def _guarded(name: str, inverse: Undo) -> None:
    try:
        inverse()
    except Exception as exc:  # one failed undo must not stop the others
        report_undo_failure(name, exc)
