"""Container commands: ps, inspect, logs, port, start, stop, restart, kill, rm, wait. (`run`, `create` and
`exec` are cli/run_command.py and cli/exec_command.py: their hot path bypasses typer.)"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import typer

from minirun.cli import render
from minirun.cli.managed import each, managed
from minirun.cli.options import DEBUG, EXPLAIN, STOP_TIME_HELP, VERBOSE, narrator

app = typer.Typer()  # merged into the top level (no group name): `minirun ps`, not `minirun container ps`


def _each_container(refs: list[str], action: Callable[[dict], None], debug: bool) -> None:
    from minirun.runtime import query

    each(refs, lambda ref: action(query.find(ref)), debug)


@app.command("ps")
def ps_cmd(
    all_: bool = typer.Option(False, "-a", "--all", help="show exited containers too"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="only ids"),
    fmt: str = typer.Option("table", "--format", help="table or json"),
    debug: bool = DEBUG,
) -> None:
    """List containers: ID, name, image, command, created, status, IP."""
    from minirun.runtime import query

    rows = managed(lambda: query.ps_rows(all_), debug, full=True)
    if quiet:
        for row in rows:
            typer.echo(row["ID"])
    elif fmt in ("table", "json"):
        render.listing(fmt, rows, _PS_HEADERS, _ps_cells)
    else:
        render.unknown_format(fmt, "use table or json", debug)


_PS_HEADERS = ("CONTAINER ID", "NAME", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "IP", "POD")
_PS_KEYS = ("ID", "Names", "Image", "Command", "RunningFor", "Status", "Ports", "IP", "Pod")


def _ps_cells(row: dict) -> tuple[str, ...]:
    """`docker ps`'s cells: COMMAND quoted and cut to 22 characters, "-" for an empty one."""
    return tuple(
        render.truncate(str(row[k]), 22) if k == "Command" and row[k] else str(row[k] or "-") for k in _PS_KEYS
    )


@app.command("inspect")
def inspect_cmd(
    refs: list[str] = typer.Argument(..., metavar="CONTAINER..."),
    fmt: str = typer.Option(None, "-f", "--format", help="a Go-template-like field, e.g. '{{.State.Pid}}'"),
    debug: bool = DEBUG,
) -> None:
    """Show containers as JSON, in Docker's shape."""
    from minirun.runtime import query

    documents = managed(lambda: [query.inspect(query.find(ref)) for ref in refs], debug)
    if fmt:
        for document in documents:
            typer.echo(managed(lambda d=document: query.select_field(d, fmt), debug))
    else:
        typer.echo(json.dumps(documents, indent=4))


@app.command("logs")
def logs_cmd(
    ref: str = typer.Argument(..., metavar="CONTAINER"),
    follow: bool = typer.Option(False, "-f", "--follow", help="keep printing until the container exits"),
    tail: int = typer.Option(None, "-n", "--tail", min=0, help="only the last N lines"),
    debug: bool = DEBUG,
) -> None:
    """Print a detached container's output (stdout and stderr, interleaved as written)."""
    from minirun.runtime import query

    record = managed(lambda: query.find(ref), debug)
    out = sys.stdout.buffer
    if follow:
        managed(lambda: query.logs(record), debug)  # a clear error when there is no log
        for chunk in query.follow_logs(record, tail):
            out.write(chunk)
            out.flush()
    else:
        out.write(managed(lambda: query.logs(record, tail), debug))
        out.flush()


@app.command("port")
def port_cmd(ref: str = typer.Argument(..., metavar="CONTAINER"), debug: bool = DEBUG) -> None:
    """List a container's published ports: 80/tcp -> 0.0.0.0:8080."""
    from minirun.runtime import query

    record = managed(lambda: query.find(ref), debug)
    for container_port, bindings in query.docker_ports(query.ports_of(record)).items():
        for binding in bindings:
            typer.echo(f"{container_port} -> {binding['HostIp']}:{binding['HostPort']}")


@app.command("stop")
def stop_cmd(
    refs: list[str] = typer.Argument(..., metavar="CONTAINER..."),
    time_: float = typer.Option(10.0, "-t", "--time", help=STOP_TIME_HELP),
    debug: bool = DEBUG,
) -> None:
    """SIGTERM, wait, then SIGKILL. Stopping a stopped container is not an error."""
    from minirun.runtime.container import control

    _each_container(refs, lambda record: control.stop(record, time_), debug)


@app.command("start")
def start_cmd(
    refs: list[str] = typer.Argument(..., metavar="CONTAINER..."),
    attach: bool = typer.Option(False, "-a", "--attach", help="print its output until it ends; exit with its code"),
    debug: bool = DEBUG,
) -> None:
    """Start created or exited containers again, detached (same id, name, files and log)."""
    from minirun.runtime.container import stopped

    if not attach:
        _each_container(refs, stopped.start, debug)
        return
    if len(refs) != 1:
        managed(lambda: _one_to_attach(), debug)
    from minirun.runtime import query
    from minirun.runtime.container import control

    record = managed(lambda: query.find(refs[0]), debug)
    out = sys.stdout.buffer
    # From the end of its log as it is now: what this run writes, not what earlier runs did (Docker's -a).
    output = query.follow_logs(record, tail=0)
    out.write(next(output))
    managed(lambda: stopped.start(record), debug)
    for chunk in output:
        out.write(chunk)
        out.flush()
    raise typer.Exit(managed(lambda: control.wait(record), debug))


def _one_to_attach() -> None:
    from minirun.errors import ConfigError

    raise ConfigError("start -a takes one container", hint="start the others without -a")


@app.command("restart")
def restart_cmd(
    refs: list[str] = typer.Argument(..., metavar="CONTAINER..."),
    time_: float = typer.Option(10.0, "-t", "--time", help=STOP_TIME_HELP),
    debug: bool = DEBUG,
) -> None:
    """Stop each container (as `stop`), then start it again."""
    from minirun.runtime.container import stopped

    _each_container(refs, lambda record: stopped.restart(record, time_), debug)


@app.command("kill")
def kill_cmd(
    refs: list[str] = typer.Argument(..., metavar="CONTAINER..."),
    signal_: str = typer.Option("KILL", "-s", "--signal", help="signal name or number"),
    debug: bool = DEBUG,
) -> None:
    """Send a signal (default SIGKILL) to each container's PID 1."""
    from minirun.runtime.container import control

    signum = managed(lambda: control.parse_signal(signal_), debug)
    _each_container(refs, lambda record: control.kill(record, signum), debug)


@app.command("rm")
def rm_cmd(
    refs: list[str] = typer.Argument(..., metavar="CONTAINER..."),
    force: bool = typer.Option(False, "-f", "--force", help="kill a running container first"),
    explain: bool = EXPLAIN,
    verbose: bool = VERBOSE,
    debug: bool = DEBUG,
) -> None:
    """Remove containers and everything they owned (record, log, name, address)."""
    from minirun.runtime.container import control

    teller = narrator(explain, verbose)
    _each_container(refs, lambda record: control.remove(record, force, teller), debug)


@app.command("wait")
def wait_cmd(refs: list[str] = typer.Argument(..., metavar="CONTAINER..."), debug: bool = DEBUG) -> None:
    """Block until each container has exited, then print its exit code (one line each, in order)."""
    from minirun.runtime import query
    from minirun.runtime.container import control

    failed = False
    for ref in refs:
        try:
            code = managed(lambda r=ref: control.wait(query.find(r)), debug)
        except typer.Exit:
            failed = True
            continue
        typer.echo(code)
    if failed:
        raise typer.Exit(1)
