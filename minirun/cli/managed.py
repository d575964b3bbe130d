"""How every management command acts: as root, after the reconcile, with a failure as one line and its exit
code (see cli/report.py) instead of a traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import typer

from minirun.cli.report import DEBUG_ENV, report
from minirun.errors import MinirunError


def managed(
    action: Callable[[], Any], debug: bool, *, reconcile: bool = True, full: bool = False, dry_run: bool = False
) -> Any:
    """Management commands: reconcile first, then act; MinirunError -> one line and its code (1 by default).
    `full`: a listing, which reads every record itself, also looks at every record in the reconcile (it
    notices a damaged one even when no minirun process died; see runtime/owners.py). A dry run touches
    nothing, not even the registry of processes at work."""
    from minirun.runtime import owners
    from minirun.runtime import reconcile as recovery
    from minirun.runtime.privileges import require_root

    try:
        require_root()
        if dry_run:
            pass
        elif reconcile:
            recovery.reconcile(full=full)
        else:
            owners.enter()  # it may change state: if it dies half-way, the next command looks
        return action()
    except MinirunError as exc:
        report(exc, debug=debug or os.environ.get(DEBUG_ENV) == "1")
        raise typer.Exit(1 if exc.code == 125 else exc.code) from None
    except OSError as exc:  # a sick host (full, read-only...): one line when it concerns minirun's own files
        from minirun.errors import host_error

        if host_error(exc) is None:
            owners.keep()  # see below
            raise
        report(exc, debug=debug or os.environ.get(DEBUG_ENV) == "1")
        raise typer.Exit(1) from None
    except typer.Exit:
        raise
    except (KeyboardInterrupt, Exception):
        # Interrupted or failed unexpectedly half-way: what it changed may be half undone, so its entry stays
        # (dead once it exits) and the next command looks at everything.
        owners.keep()
        raise


def each(refs: list[str], action: Callable[[str], None], debug: bool, *, full: bool = False) -> None:
    """Docker's multi-object verbs: act on each, print each name done, exit 1 if any failed. `full`: the
    verb decides from every record whether its object is in use (a damaged record must be seen first)."""
    failed = False
    for ref in refs:
        try:
            managed(lambda r=ref: action(r), debug, full=full)
            typer.echo(ref)
        except typer.Exit:
            failed = True
    if failed:
        raise typer.Exit(1)
