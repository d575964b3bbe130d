"""Command-line entry point. `minirun run` and `minirun exec` are dispatched without importing typer
(40-60 ms) or pyroute2; every other command goes through the typer app in `minirun.cli.app`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        from minirun.cli.run_command import run_command

        return run_command(argv[1:])
    if argv[:1] == ["create"]:
        from minirun.cli.run_command import create_command

        return create_command(argv[1:])
    if argv[:1] == ["exec"]:
        from minirun.cli.exec_command import exec_command

        return exec_command(argv[1:])
    from minirun.cli.app import run_app

    return run_app(argv)
