"""`minirun pod ...`: create, ls, inspect, rm, stop."""

from __future__ import annotations

import json

import typer

from minirun.cli import render
from minirun.cli.commands import group
from minirun.cli.managed import each, managed
from minirun.cli.options import DEBUG, EXPLAIN, STOP_TIME_HELP, VERBOSE, narrator

app = group("Pods: shared net, uts and ipc namespaces, one address, members on localhost.")


@app.command("create")
def pod_create_cmd(
    name: str = typer.Argument(..., metavar="NAME"),
    share: str = typer.Option("net,uts,ipc", "--share", help="namespaces the members share"),
    hostname: str = typer.Option(None, "--hostname", help="hostname of the pod (default: its name)"),
    explain: bool = EXPLAIN,
    dry_run: bool = typer.Option(False, "--dry-run", help="print the steps (with placeholders), change nothing"),
    verbose: bool = VERBOSE,
    publish: list[str] = typer.Option([], "-p", "--publish", help="[IP:]HOST:CONTAINER[/udp], repeatable"),
    network: str = typer.Option("bridge", "--network", help="bridge (minirun0) or a network's name"),
    debug: bool = DEBUG,
) -> None:
    """Create a pod: pinned namespaces (visible as minirun-NAME to `ip netns`) attached to minirun0."""
    from minirun.runtime import pod
    from minirun.spec import validate_hostname

    teller = narrator(explain, verbose, dry_run)

    def create():
        shared = pod.parse_share(share)
        pod.validate_name(name)
        from minirun.net.ports import parse_all

        mappings = parse_all(publish)
        host_name = validate_hostname(hostname) if hostname else None
        return pod.create(name, shared, host_name, teller, dry_run, mappings, network)

    created = managed(create, debug, dry_run=dry_run)
    if created is not None:
        typer.echo(created["id"])


@app.command("ls")
def pod_ls_cmd(fmt: str = typer.Option("table", "--format", help="table or json"), debug: bool = DEBUG) -> None:
    """List pods: NAME, ID, STATUS, IP, MEMBERS, CREATED."""
    import datetime

    from minirun.runtime import query

    rows = managed(query.pod_rows, debug, full=True)
    now = datetime.datetime.now(datetime.UTC)
    render.listing(
        fmt,
        rows,
        ("NAME", "ID", "STATUS", "IP", "MEMBERS", "CREATED"),
        lambda r: (
            r["Name"],
            r["ID"],
            r["Status"],
            r["IP"],
            f"{r['Running']}/{r['Members']}",
            render.ago(r["Created"], now),
        ),
    )


@app.command("inspect")
def pod_inspect_cmd(name: str = typer.Argument(..., metavar="NAME"), debug: bool = DEBUG) -> None:
    """Show a pod as JSON: id, address, gateway, netns path, shared namespaces, members."""
    from minirun.runtime import query, store

    typer.echo(json.dumps(managed(lambda: query.inspect_pod(store.find_pod(name)), debug), indent=4))


@app.command("rm")
def pod_rm_cmd(
    names: list[str] = typer.Argument(..., metavar="NAME..."),
    force: bool = typer.Option(False, "-f", "--force", help="stop running members first"),
    explain: bool = EXPLAIN,
    verbose: bool = VERBOSE,
    debug: bool = DEBUG,
) -> None:
    """Remove pods: members, address, veth, pinned namespaces and records."""
    from minirun.runtime import pod

    teller = narrator(explain, verbose)
    each(names, lambda name: pod.remove(name, force, teller), debug, full=True)


@app.command("stop")
def pod_stop_cmd(
    name: str = typer.Argument(..., metavar="NAME"),
    time_: float = typer.Option(10.0, "-t", "--time", help=STOP_TIME_HELP),
    debug: bool = DEBUG,
) -> None:
    """Stop every member; the pod keeps its namespaces and address until `pod rm`."""
    from minirun.runtime import pod

    managed(lambda: pod.stop(name, time_), debug, full=True)
    typer.echo(name)
