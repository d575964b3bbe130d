"""Command-line entry point. `minirun run` is dispatched without importing typer (40-60 ms) or pyroute2;
every other command goes through the typer app in `minirun.cli.app`."""

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
    if isinstance(exc, MinirunError):
        hint = f"; {exc.hint}" if exc.hint else ""
        print(f"minirun: error: {exc.msg}{hint}", file=sys.stderr)
    else:
        print(
            f"minirun: error: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)",
            file=sys.stderr,
        )


def run_command(args: list[str]) -> int:
    """`minirun run ARGS`: returns the exit status (Docker's convention)."""
    from minirun.cli import run_args

    debug = os.environ.get(DEBUG_ENV) == "1" or "--debug" in args[: _first_positional(args)]
    try:
        spec = run_args.parse(args)
        from minirun.runtime import container

        return container.run(spec)
    except run_args.HelpRequested:
        print(run_args.help_text())
        return 0
    except KeyboardInterrupt:
        return 130
    except MinirunError as exc:
        report(exc, debug=debug)
        return exc.code
    except Exception as exc:  # a bug, not a user mistake
        report(exc, debug=debug)
        return EXIT_MINIRUN_FAILED


def _first_positional(args: list[str]) -> int:
    # Good enough to find --debug among minirun's own options without parsing twice.
    for i, arg in enumerate(args):
        if arg == "--" or not arg.startswith("-"):
            return i
    return len(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return run_command(argv[1:])
    from minirun.cli.app import run_app

    return run_app(argv)
