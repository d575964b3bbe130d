"""The typer app: every command except the hot paths of `run` and `exec` (see minirun.cli), put together from
cli/commands/. Registration order is the order `minirun --help` lists them in."""

from __future__ import annotations

import typer

from minirun.cli.commands import containers, images, networks, pods, system
from minirun.cli.exec_args import SUMMARY as EXEC_SUMMARY
from minirun.cli.exec_command import exec_command
from minirun.cli.run_args import SUMMARY as RUN_SUMMARY
from minirun.cli.run_command import create_command, run_command

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

# `run` and `exec` parse their own options (Docker's grammar, cli/run_args.py): typer passes everything on.
_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command("run", help=RUN_SUMMARY + " See 'minirun run --help'.", context_settings=_PASSTHROUGH)
def run_cmd(ctx: typer.Context) -> None:
    raise typer.Exit(run_command(list(ctx.args)))


@app.command(
    "create",
    help="Create a container (run's options, without -d) and start it later. See 'minirun run --help'.",
    context_settings=_PASSTHROUGH,
)
def create_cmd(ctx: typer.Context) -> None:
    raise typer.Exit(create_command(list(ctx.args)))


@app.command("exec", help=EXEC_SUMMARY + " See 'minirun exec --help'.", context_settings=_PASSTHROUGH)
def exec_cmd(ctx: typer.Context) -> None:
    raise typer.Exit(exec_command(list(ctx.args)))


# Without a name, a sub-app's commands join the top level (`minirun ps`); with one, they form a group.
app.add_typer(containers.app)  # ps, inspect, logs, port, stop, kill, rm
app.add_typer(system.app)  # gc, doctor, topology, version
app.add_typer(pods.app, name="pod")
app.add_typer(networks.app, name="network")
app.add_typer(images.app, name="image")


def run_app(argv: list[str]) -> int:
    try:
        app(args=argv, prog_name="minirun", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
