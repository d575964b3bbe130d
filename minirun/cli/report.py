"""How a command's failure reaches the operator: one line (a traceback only with --debug), and Docker's exit
codes (125 when minirun itself failed). Shared by the hot paths (`run`, `exec`) and the typer app."""

from __future__ import annotations

import os
import sys

from minirun.errors import EXIT_MINIRUN_FAILED, MinirunError

DEBUG_ENV = "MINIRUN_DEBUG"


def report(exc: BaseException, *, debug: bool) -> None:
    """One line for the operator; the traceback only with --debug / MINIRUN_DEBUG=1."""
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, OSError):
        from minirun.errors import host_error

        exc = host_error(exc) or exc
    if isinstance(exc, MinirunError):
        hint = f"; {exc.hint}" if exc.hint else ""
        print(f"minirun: error: {exc.msg}{hint}", file=sys.stderr)
    else:
        print(
            f"minirun: error: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)",
            file=sys.stderr,
        )


def guarded(args: list[str], action, help_text) -> int:
    """Run `action()`, mapping errors to Docker's exit codes: 125 when minirun itself failed."""
    from minirun.cli.dockerargs import HelpRequested

    debug = os.environ.get(DEBUG_ENV) == "1" or "--debug" in args[: first_positional(args)]
    try:
        return action()
    except HelpRequested:
        print(help_text())
        return 0
    except KeyboardInterrupt:
        _keep_registry_entry()
        return 130
    except MinirunError as exc:
        report(exc, debug=debug)
        return exc.code
    except Exception as exc:  # a bug, not a user mistake
        _keep_registry_entry()
        report(exc, debug=debug)
        return EXIT_MINIRUN_FAILED


def _keep_registry_entry() -> None:
    """Interrupted or failed unexpectedly half-way: what the command changed may be half undone, so its entry
    in the owners registry stays (dead once it exits) and the next command looks at everything."""
    from minirun.runtime import owners

    owners.keep()


def first_positional(args: list[str]) -> int:
    # Good enough to find --debug among minirun's own options without parsing twice.
    for i, arg in enumerate(args):
        if arg == "--" or not arg.startswith("-"):
            return i
    return len(args)
