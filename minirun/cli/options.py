"""Options that several commands share, spelled once so that their help reads the same everywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from minirun.plan import Narrator

DEBUG = typer.Option(False, "--debug", help="show a traceback when minirun itself fails")
EXPLAIN = typer.Option(False, "--explain", help="print each step as the commands a person would type")
VERBOSE = typer.Option(False, "-v", "--verbose", help="log each step with its duration")
STOP_TIME_HELP = "seconds to wait after SIGTERM before SIGKILL (-1: forever, as Docker)"


def narrator(explain: bool, verbose: bool, dry_run: bool = False) -> Narrator | None:
    """What --explain / -v / --dry-run ask to be told about each step (imported late: plan is not needed
    for --help)."""
    from minirun.plan import Narrator

    return Narrator.for_flags(explain=explain, dry_run=dry_run, verbose=verbose)
