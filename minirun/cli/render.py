"""How listings print: Docker's plain tables, one JSON document per line, ages and sizes in Docker's units."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import typer

from minirun.cli.report import report
from minirun.errors import MinirunError


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Columns as wide as their widest cell, three spaces apart, no trailing blanks (`docker ps`)."""
    lines = [headers, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    for line in lines:
        typer.echo("   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def listing(
    fmt: str, rows: list[dict[str, Any]], headers: tuple[str, ...], cells: Callable[[dict[str, Any]], tuple[str, ...]]
) -> None:
    """A listing's output: `--format json`, one document per line; otherwise the table of `cells(row)`."""
    if fmt == "json":
        json_lines(rows)
    else:
        table(headers, [cells(row) for row in rows])


def json_lines(rows: Iterable[dict[str, Any]]) -> None:
    """`--format json` of a listing: one document per line, as `docker ps --format json`."""
    for row in rows:
        typer.echo(json.dumps(row))


def unknown_format(fmt: str, hint: str, debug: bool) -> NoReturn:
    """A --format value the command does not know: one line, usage error (2)."""
    report(MinirunError(f'unknown --format "{fmt}"', hint=hint), debug=debug)
    raise typer.Exit(2)


def truncate(text: str, width: int) -> str:
    """Quoted, and cut to `width` with an ellipsis inside the quotes (`docker ps`'s COMMAND column)."""
    quoted = f'"{text}"'
    return quoted if len(quoted) <= width else quoted[: width - 4] + '..."'


def ago(created: str, now: datetime.datetime) -> str:
    """`5 minutes ago` for a record's ISO timestamp."""
    from minirun.runtime import query

    return f"{query.human_duration(query.seconds_since(created, now))} ago"


def human_size(size: int) -> str:
    """Docker's units: decimal, up to two decimals (4.26MB)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            break
        value /= 1000
    return f"{value:.2f}".rstrip("0").rstrip(".") + unit
