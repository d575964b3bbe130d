"""The typer app: every command except the hot path of `run` (see minirun.cli.run_command)."""

from __future__ import annotations

import os

import typer

from minirun import __version__
from minirun.cli import DEBUG_ENV, report, run_command
from minirun.cli.run_args import SUMMARY
from minirun.errors import MinirunError

app = typer.Typer(
    name="minirun",
    help="Containers and pods from Linux namespaces, veth pairs and a bridge - and what each step does.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    # Plain help and errors: rich's renderer costs ~45 ms per start, more than a whole container run.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@app.command(
    "run",
    help=SUMMARY + " See 'minirun run --help' for its options.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def run_cmd(ctx: typer.Context) -> None:
    raise typer.Exit(run_command(list(ctx.args)))


@app.command("gc")
def gc_cmd(debug: bool = typer.Option(False, "--debug", help="show tracebacks")) -> None:
    """Release what killed launchers left behind (addresses, veths, records) and print it."""
    from minirun.runtime import gc
    from minirun.runtime.privileges import require_root

    try:
        require_root()
        from minirun.net.network import DEFAULT_BRIDGE

        removed = gc.reconcile() + gc.remove_orphan_links(DEFAULT_BRIDGE)
    except MinirunError as exc:
        report(exc, debug=debug or os.environ.get(DEBUG_ENV) == "1")
        raise typer.Exit(1) from None
    for item in removed:
        typer.echo(f"removed {item}")


@app.command("version")
def version_cmd() -> None:
    """Print minirun's version."""
    typer.echo(f"minirun {__version__}")


def run_app(argv: list[str]) -> int:
    try:
        app(args=argv, prog_name="minirun", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
