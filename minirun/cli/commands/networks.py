"""`minirun network ...`: create, ls, inspect, rm."""

from __future__ import annotations

import json

import typer

from minirun.cli import render
from minirun.cli.commands import group
from minirun.cli.managed import each, managed
from minirun.cli.options import DEBUG, EXPLAIN, VERBOSE, narrator

app = group("User networks: own bridge, subnet and NAT, isolated from each other.")


@app.command("create")
def network_create_cmd(
    name: str = typer.Argument(..., metavar="NAME"),
    subnet: str = typer.Option(None, "--subnet", help="CIDR (default: a free /16 from 10.78-127.0.0/16)"),
    gateway: str = typer.Option(None, "--gateway", help="the bridge's address (default: the first host)"),
    internal: bool = typer.Option(False, "--internal", help="no masquerade and no way out"),
    mtu: int = typer.Option(None, "--mtu", help="MTU of the bridge and of its containers' links"),
    explain: bool = EXPLAIN,
    dry_run: bool = typer.Option(False, "--dry-run", help="print the steps, change nothing"),
    verbose: bool = VERBOSE,
    debug: bool = DEBUG,
) -> None:
    """Create a bridge network: its own bridge (mr-NAME), subnet, gateway and masquerade rule."""
    from minirun.runtime import network_admin
    from minirun.spec import validate_mtu

    teller = narrator(explain, verbose, dry_run)
    made = managed(
        lambda: network_admin.create(name, subnet, gateway, internal, validate_mtu(mtu), teller, dry_run),
        debug,
        dry_run=dry_run,
    )
    if made is not None:
        typer.echo(made["id"])


@app.command("ls")
def network_ls_cmd(fmt: str = typer.Option("table", "--format", help="table or json"), debug: bool = DEBUG) -> None:
    """List networks: NAME, BRIDGE, SUBNET, GATEWAY, INTERNAL, CONTAINERS."""
    from minirun.runtime import network_admin

    rows = managed(network_admin.rows, debug, full=True)
    render.listing(
        fmt,
        rows,
        ("NAME", "BRIDGE", "SUBNET", "GATEWAY", "INTERNAL", "CONTAINERS"),
        lambda r: (
            r["Name"],
            r["Bridge"],
            r["Subnet"],
            r["Gateway"],
            str(r["Internal"]).lower(),
            str(len(r["Containers"])),
        ),
    )


@app.command("inspect")
def network_inspect_cmd(name: str = typer.Argument(..., metavar="NAME"), debug: bool = DEBUG) -> None:
    """Show a network as JSON."""
    from minirun.runtime import network_admin

    typer.echo(json.dumps(managed(lambda: network_admin.inspect(name), debug), indent=4))


@app.command("rm")
def network_rm_cmd(
    names: list[str] = typer.Argument(..., metavar="NAME..."),
    explain: bool = EXPLAIN,
    verbose: bool = VERBOSE,
    debug: bool = DEBUG,
) -> None:
    """Remove networks that no container or pod uses: bridge, rules, records."""
    from minirun.runtime import network_admin

    teller = narrator(explain, verbose)
    each(names, lambda name: network_admin.remove(name, teller), debug, full=True)
