"""The typer commands, one module per kind of object (`minirun ps` -> containers.py, `minirun pod ls` ->
pods.py, `minirun gc` -> system.py); cli/app.py puts them together. Each acts through cli/managed.py and
imports the runtime only when it runs, so that `--help` and start-up stay fast."""

from __future__ import annotations

import typer


def group(help_text: str) -> typer.Typer:
    """A command group (`minirun pod ...`): plain help, usage when called bare."""
    return typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode=None)
