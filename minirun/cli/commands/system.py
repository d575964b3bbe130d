"""Host-wide commands, as `docker system`: gc (and what damaged records hold), doctor, topology, version."""

from __future__ import annotations

import json

import typer

from minirun import __version__
from minirun.cli import render
from minirun.cli.managed import managed
from minirun.cli.options import DEBUG, EXPLAIN, VERBOSE, narrator

app = typer.Typer()  # merged into the top level (no group name)


@app.command("gc")
def gc_cmd(
    damaged: bool = typer.Option(False, "--damaged", help="show what containers with damaged records hold"),
    force: bool = typer.Option(False, "-f", "--force", help="with --damaged: release it"),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="with --damaged: try again to rebuild the records of those still running"
    ),
    explain: bool = EXPLAIN,
    verbose: bool = VERBOSE,
    debug: bool = DEBUG,
) -> None:
    """Release what killed launchers left behind (addresses, veths, records) and print it."""
    from minirun.runtime import reconcile

    if force and not damaged:
        raise typer.BadParameter("-f only goes with --damaged", param_hint="-f")
    if rebuild and (not damaged or force):
        raise typer.BadParameter("--rebuild goes with --damaged, without -f", param_hint="--rebuild")
    if rebuild:
        _rebuild_damaged(debug)
        return
    if damaged:
        _damaged(force, debug)
        return
    removed = managed(lambda: reconcile.collect_garbage(narrator(explain, verbose)), debug, reconcile=False)
    for item in removed:
        typer.echo(f"removed {item}")


def _damaged(force: bool, debug: bool) -> None:
    """`gc --damaged [-f]`: what damaged pod and container records hold, or (-f) release it."""
    from minirun.runtime import damaged, pod_teardown, store

    holdings = managed(damaged.holdings, debug, full=True)
    pods = store.damaged_pod_names()
    if not holdings and not pods:
        typer.echo("no damaged records")
        return
    for name in pods:
        if force:
            for item in managed(lambda n=name: pod_teardown.release_damaged(n), debug, reconcile=False):
                typer.echo(f"released {item} (pod {name})")
        else:
            typer.echo(
                f"pod {name} (damaged record) holds its pins (/run/netns/minirun-{name}), its directory, and "
                "an address and veth that no command releases until then"
            )
    for holding in holdings:
        if holding.rebuilt and not force:
            typer.echo(
                f"container {holding.container_id} has a rebuilt record; its damaged record is kept: "
                + ", ".join(holding.records)
            )
        elif force:
            for item in managed(lambda h=holding: damaged.release(h), debug, reconcile=False):
                typer.echo(f"released {item} (container {holding.container_id})")
        else:
            typer.echo(f"container {holding.container_id} (damaged record) holds: {', '.join(holding.describe())}")
    if not force:
        typer.echo("release them with: minirun gc --damaged -f")


def _rebuild_damaged(debug: bool) -> None:
    """`gc --damaged --rebuild`: each container whose damaged record was set aside and that has no record
    gets one rebuilt from the kernel if it provably still runs (reconcile tries once, when it sets a record
    aside; this tries again, e.g. for one set aside by an older minirun)."""
    from minirun.runtime import damaged, rebuild

    holdings = [h for h in managed(damaged.holdings, debug) if not h.rebuilt]
    if not holdings:
        typer.echo("no damaged record to rebuild")
        return
    for holding in holdings:
        outcome = managed(lambda h=holding: rebuild.attempt(h.container_id), debug, reconcile=False)
        if outcome.record is not None:
            typer.echo(f"rebuilt container {holding.container_id} ({outcome.reason})")
        else:
            typer.echo(f"container {holding.container_id} not rebuilt: {outcome.reason}")


@app.command("doctor")
def doctor_cmd(
    ref: str = typer.Argument(None, metavar="[CONTAINER|POD]"),
    fix: bool = typer.Option(False, "--fix", help="apply minirun's own fixes, then check again"),
    debug: bool = DEBUG,
) -> None:
    """Check the host (and a container or pod) against the seed's common mistakes; exit 1 if any."""
    from minirun.runtime import doctor

    findings = managed(lambda: doctor.diagnose(ref), debug, reconcile=False)
    if fix:
        for what in managed(lambda: doctor.repair(findings), debug, reconcile=False):
            typer.echo(f"fixed  {what}")
        findings = managed(lambda: doctor.diagnose(ref), debug, reconcile=False)
    for finding in findings:
        mark = "note" if finding.note else "ok" if finding.ok else "FAIL"
        typer.echo(f"{mark:<5}  {finding.what}")
        if not finding.ok or finding.note:
            if finding.why:
                typer.echo(f"       why: {finding.why}")
            if finding.fix:
                fix_lines = finding.fix.splitlines()
                typer.echo(f"       fix: {fix_lines[0]}")
                for line in fix_lines[1:]:
                    typer.echo(f"            {line}")
                if finding.repair is not None:
                    typer.echo("            (minirun doctor --fix does this)")
    raise typer.Exit(0 if all(f.ok for f in findings) else 1)


@app.command("topology")
def topology_cmd(
    fmt: str = typer.Option("text", "--format", help="text, json or dot (Graphviz)"),
    debug: bool = DEBUG,
) -> None:
    """Draw the live host: bridge, gateway, veths, containers and pods with their eth0, the NAT exit."""
    from minirun.runtime import topology

    document = managed(topology.collect, debug, full=True)
    if fmt == "json":
        typer.echo(json.dumps(document, indent=2))
    elif fmt == "dot":
        typer.echo(topology.render_dot(document))
    elif fmt == "text":
        typer.echo(topology.render_text(document))
    else:
        render.unknown_format(fmt, "use text, json or dot", debug)


@app.command("version")
def version_cmd() -> None:
    """Print minirun's version."""
    typer.echo(f"minirun {__version__}")
