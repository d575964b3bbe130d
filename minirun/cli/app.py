"""The typer app: every command except the hot paths of `run` and `exec` (see minirun.cli)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

from minirun import __version__
from minirun.cli.exec_args import SUMMARY as EXEC_SUMMARY
from minirun.cli.exec_command import exec_command
from minirun.cli.report import DEBUG_ENV, report
from minirun.cli.run_args import SUMMARY as RUN_SUMMARY
from minirun.cli.run_command import run_command
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

_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
DEBUG = typer.Option(False, "--debug", help="show a traceback when minirun itself fails")
EXPLAIN = typer.Option(False, "--explain", help="print each step as the commands a person would type")
VERBOSE = typer.Option(False, "-v", "--verbose", help="log each step with its duration")


def _narrator(explain: bool, verbose: bool):
    from minirun.plan import Narrator

    return Narrator.for_flags(explain=explain, verbose=verbose)


@app.command("run", help=RUN_SUMMARY + " See 'minirun run --help'.", context_settings=_PASSTHROUGH)
def run_cmd(ctx: typer.Context) -> None:
    raise typer.Exit(run_command(list(ctx.args)))


@app.command("exec", help=EXEC_SUMMARY + " See 'minirun exec --help'.", context_settings=_PASSTHROUGH)
def exec_cmd(ctx: typer.Context) -> None:
    raise typer.Exit(exec_command(list(ctx.args)))


def _managed(
    action: Callable[[], Any], debug: bool, *, reconcile: bool = True, full: bool = False, dry_run: bool = False
) -> Any:
    """Management commands: reconcile first, then act; MinirunError -> one line and its code (1 by default).
    `full`: a listing, which reads every record itself, also looks at every record in the reconcile (it
    notices a damaged one even when no minirun process died; see runtime/owners.py). A dry run touches
    nothing, not even the registry of processes at work."""
    from minirun.runtime import gc, owners
    from minirun.runtime.privileges import require_root

    try:
        require_root()
        if dry_run:
            pass
        elif reconcile:
            gc.reconcile(full=full)
        else:
            owners.enter()  # it may change state: if it dies half-way, the next command looks
        return action()
    except MinirunError as exc:
        report(exc, debug=debug or os.environ.get(DEBUG_ENV) == "1")
        raise typer.Exit(1 if exc.code == 125 else exc.code) from None
    except OSError as exc:  # a sick host (full, read-only...): one line when it concerns minirun's own files
        from minirun.errors import host_error

        if host_error(exc) is None:
            raise
        report(exc, debug=debug or os.environ.get(DEBUG_ENV) == "1")
        raise typer.Exit(1) from None


def _each(refs: list[str], action: Callable[[str], None], debug: bool) -> None:
    """Docker's multi-object verbs: act on each, print each name done, exit 1 if any failed."""
    failed = False
    for ref in refs:
        try:
            _managed(lambda r=ref: action(r), debug)
            typer.echo(ref)
        except typer.Exit:
            failed = True
    if failed:
        raise typer.Exit(1)


def _each_container(refs: list[str], action: Callable[[dict], None], debug: bool) -> None:
    from minirun.runtime import lifecycle

    _each(refs, lambda ref: action(lifecycle.find(ref)), debug)


@app.command("ps")
def ps_cmd(
    all_: bool = typer.Option(False, "-a", "--all", help="show exited containers too"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="only ids"),
    fmt: str = typer.Option("table", "--format", help="table or json"),
    debug: bool = DEBUG,
) -> None:
    """List containers: ID, name, image, command, created, status, IP."""
    from minirun.runtime import lifecycle

    rows = _managed(lambda: lifecycle.ps_rows(all_), debug, full=True)
    if quiet:
        for row in rows:
            typer.echo(row["ID"])
    elif fmt == "json":
        for row in rows:
            typer.echo(json.dumps(row))
    elif fmt == "table":
        headers = ("CONTAINER ID", "NAME", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "IP", "POD")
        keys = ("ID", "Names", "Image", "Command", "RunningFor", "Status", "Ports", "IP", "Pod")
        _table(
            headers,
            [
                tuple(_truncate(str(r[k]), 22) if k == "Command" and r[k] else str(r[k] or "-") for k in keys)
                for r in rows
            ],
        )
    else:
        report(MinirunError(f'unknown --format "{fmt}"', hint="use table or json"), debug=debug)
        raise typer.Exit(2)


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = [headers, *rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    for line in table:
        typer.echo("   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _truncate(text: str, width: int) -> str:
    quoted = f'"{text}"'
    return quoted if len(quoted) <= width else quoted[: width - 4] + '..."'


@app.command("inspect")
def inspect_cmd(
    refs: list[str] = typer.Argument(..., metavar="CONTAINER..."),
    fmt: str = typer.Option(None, "-f", "--format", help="a Go-template-like field, e.g. '{{.State.Pid}}'"),
    debug: bool = DEBUG,
) -> None:
    """Show containers as JSON, in Docker's shape."""
    from minirun.runtime import lifecycle

    documents = _managed(lambda: [lifecycle.inspect(lifecycle.find(ref)) for ref in refs], debug)
    if fmt:
        for document in documents:
            typer.echo(_managed(lambda d=document: lifecycle.select_field(d, fmt), debug))
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
    from minirun.runtime import lifecycle

    record = _managed(lambda: lifecycle.find(ref), debug)
    out = sys.stdout.buffer
    if follow:
        _managed(lambda: lifecycle.logs(record), debug)  # a clear error when there is no log
        for chunk in lifecycle.follow_logs(record, tail):
            out.write(chunk)
            out.flush()
    else:
        out.write(_managed(lambda: lifecycle.logs(record, tail), debug))
        out.flush()


@app.command("port")
def port_cmd(ref: str = typer.Argument(..., metavar="CONTAINER"), debug: bool = DEBUG) -> None:
    """List a container's published ports: 80/tcp -> 0.0.0.0:8080."""
    from minirun.runtime import lifecycle

    record = _managed(lambda: lifecycle.find(ref), debug)
    for container_port, bindings in lifecycle.docker_ports(lifecycle.ports_of(record)).items():
        for binding in bindings:
            typer.echo(f"{container_port} -> {binding['HostIp']}:{binding['HostPort']}")


STOP_TIME_HELP = "seconds to wait after SIGTERM before SIGKILL (-1: forever, as Docker)"


@app.command("stop")
def stop_cmd(
    refs: list[str] = typer.Argument(..., metavar="CONTAINER..."),
    time_: float = typer.Option(10.0, "-t", "--time", help=STOP_TIME_HELP),
    debug: bool = DEBUG,
) -> None:
    """SIGTERM, wait, then SIGKILL. Stopping a stopped container is not an error."""
    from minirun.runtime import lifecycle

    _each_container(refs, lambda record: lifecycle.stop(record, time_), debug)


@app.command("kill")
def kill_cmd(
    refs: list[str] = typer.Argument(..., metavar="CONTAINER..."),
    signal_: str = typer.Option("KILL", "-s", "--signal", help="signal name or number"),
    debug: bool = DEBUG,
) -> None:
    """Send a signal (default SIGKILL) to each container's PID 1."""
    from minirun.runtime import lifecycle

    signum = _managed(lambda: lifecycle.parse_signal(signal_), debug)
    _each_container(refs, lambda record: lifecycle.kill(record, signum), debug)


@app.command("rm")
def rm_cmd(
    refs: list[str] = typer.Argument(..., metavar="CONTAINER..."),
    force: bool = typer.Option(False, "-f", "--force", help="kill a running container first"),
    explain: bool = EXPLAIN,
    verbose: bool = VERBOSE,
    debug: bool = DEBUG,
) -> None:
    """Remove containers and everything they owned (record, log, name, address)."""
    from minirun.runtime import lifecycle

    narrator = _narrator(explain, verbose)
    _each_container(refs, lambda record: lifecycle.remove(record, force, narrator), debug)


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
    from minirun.net.network import all_networks
    from minirun.runtime import gc

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

    def collect() -> list[str]:
        removed = gc.reconcile(_narrator(explain, verbose), full=True)
        for network in all_networks():
            removed += gc.remove_orphan_links(network.bridge)
        return removed

    removed = _managed(collect, debug, reconcile=False)
    for item in removed:
        typer.echo(f"removed {item}")


def _damaged(force: bool, debug: bool) -> None:
    from minirun.runtime import damaged, pod

    holdings = _managed(damaged.holdings, debug, full=True)
    pods = pod.damaged_names()
    if not holdings and not pods:
        typer.echo("no damaged records")
        return
    for name in pods:
        if force:
            for item in _managed(lambda n=name: pod.release_damaged(n), debug, reconcile=False):
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
            for item in _managed(lambda h=holding: damaged.release(h), debug, reconcile=False):
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

    holdings = [h for h in _managed(damaged.holdings, debug) if not h.rebuilt]
    if not holdings:
        typer.echo("no damaged record to rebuild")
        return
    for holding in holdings:
        outcome = _managed(lambda h=holding: rebuild.attempt(h.container_id), debug, reconcile=False)
        if outcome.record is not None:
            typer.echo(f"rebuilt container {holding.container_id} ({outcome.reason})")
        else:
            typer.echo(f"container {holding.container_id} not rebuilt: {outcome.reason}")


def _subapp(name: str, help_text: str) -> typer.Typer:
    """A command group (`minirun pod ...`): plain help, usage when called bare."""
    group = typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(group, name=name)
    return group


pod_app = _subapp("pod", "Pods: shared net, uts and ipc namespaces, one address, members on localhost.")


@pod_app.command("create")
def pod_create_cmd(
    name: str = typer.Argument(..., metavar="NAME"),
    share: str = typer.Option("net,uts,ipc", "--share", help="namespaces the members share"),
    hostname: str = typer.Option(None, "--hostname", help="hostname of the pod (default: its name)"),
    explain: bool = typer.Option(False, "--explain", help="print each step as the commands a person would type"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the steps (with placeholders), change nothing"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="log each step with its duration"),
    publish: list[str] = typer.Option([], "-p", "--publish", help="[IP:]HOST:CONTAINER[/udp], repeatable"),
    network: str = typer.Option("bridge", "--network", help="bridge (minirun0) or a network's name"),
    debug: bool = DEBUG,
) -> None:
    """Create a pod: pinned namespaces (visible as minirun-NAME to `ip netns`) attached to minirun0."""
    from minirun.plan import Narrator
    from minirun.runtime import pod
    from minirun.spec import validate_hostname

    narrator = Narrator.for_flags(explain=explain, dry_run=dry_run, verbose=verbose)

    def create():
        shared = pod.parse_share(share)
        pod.validate_name(name)
        from minirun.net.ports import parse_all

        mappings = parse_all(publish)
        host_name = validate_hostname(hostname) if hostname else None
        return pod.create(name, shared, host_name, narrator, dry_run, mappings, network)

    created = _managed(create, debug, dry_run=dry_run)
    if created is not None:
        typer.echo(created["id"])


@pod_app.command("ls")
def pod_ls_cmd(fmt: str = typer.Option("table", "--format", help="table or json"), debug: bool = DEBUG) -> None:
    """List pods: NAME, ID, STATUS, IP, MEMBERS, CREATED."""
    from minirun.runtime import lifecycle, pod

    rows = _managed(pod.rows, debug, full=True)
    if fmt == "json":
        for row in rows:
            typer.echo(json.dumps(row))
        return
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    _table(
        ("NAME", "ID", "STATUS", "IP", "MEMBERS", "CREATED"),
        [
            (
                r["Name"],
                r["ID"],
                r["Status"],
                r["IP"],
                f"{r['Running']}/{r['Members']}",
                f"{lifecycle.human_duration(lifecycle.seconds_since(r['Created'], now))} ago",
            )
            for r in rows
        ],
    )


@pod_app.command("inspect")
def pod_inspect_cmd(name: str = typer.Argument(..., metavar="NAME"), debug: bool = DEBUG) -> None:
    """Show a pod as JSON: id, address, gateway, netns path, shared namespaces, members."""
    from minirun.runtime import pod

    typer.echo(json.dumps(_managed(lambda: pod.inspect(pod.find(name)), debug), indent=4))


@pod_app.command("rm")
def pod_rm_cmd(
    names: list[str] = typer.Argument(..., metavar="NAME..."),
    force: bool = typer.Option(False, "-f", "--force", help="stop running members first"),
    explain: bool = EXPLAIN,
    verbose: bool = VERBOSE,
    debug: bool = DEBUG,
) -> None:
    """Remove pods: members, address, veth, pinned namespaces and records."""
    from minirun.runtime import pod

    narrator = _narrator(explain, verbose)
    _each(names, lambda name: pod.remove(name, force, narrator), debug)


@pod_app.command("stop")
def pod_stop_cmd(
    name: str = typer.Argument(..., metavar="NAME"),
    time_: float = typer.Option(10.0, "-t", "--time", help=STOP_TIME_HELP),
    debug: bool = DEBUG,
) -> None:
    """Stop every member; the pod keeps its namespaces and address until `pod rm`."""
    from minirun.runtime import pod

    _managed(lambda: pod.stop(name, time_), debug)
    typer.echo(name)


@app.command("doctor")
def doctor_cmd(
    ref: str = typer.Argument(None, metavar="[CONTAINER|POD]"),
    fix: bool = typer.Option(False, "--fix", help="apply minirun's own fixes, then check again"),
    debug: bool = DEBUG,
) -> None:
    """Check the host (and a container or pod) against the seed's common mistakes; exit 1 if any."""
    from minirun.runtime import doctor

    findings = _managed(lambda: doctor.diagnose(ref), debug, reconcile=False)
    if fix:
        for what in _managed(lambda: doctor.repair(findings), debug, reconcile=False):
            typer.echo(f"fixed  {what}")
        findings = _managed(lambda: doctor.diagnose(ref), debug, reconcile=False)
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

    document = _managed(topology.collect, debug, full=True)
    if fmt == "json":
        typer.echo(json.dumps(document, indent=2))
    elif fmt == "dot":
        typer.echo(topology.render_dot(document))
    elif fmt == "text":
        typer.echo(topology.render_text(document))
    else:
        report(MinirunError(f'unknown --format "{fmt}"', hint="use text, json or dot"), debug=debug)
        raise typer.Exit(2)


network_app = _subapp("network", "User networks: own bridge, subnet and NAT, isolated from each other.")


@network_app.command("create")
def network_create_cmd(
    name: str = typer.Argument(..., metavar="NAME"),
    subnet: str = typer.Option(None, "--subnet", help="CIDR (default: a free /16 from 10.78-127.0.0/16)"),
    gateway: str = typer.Option(None, "--gateway", help="the bridge's address (default: the first host)"),
    internal: bool = typer.Option(False, "--internal", help="no masquerade and no way out"),
    mtu: int = typer.Option(None, "--mtu", help="MTU of the bridge and of its containers' links"),
    explain: bool = typer.Option(False, "--explain", help="print each step as the commands a person would type"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the steps, change nothing"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="log each step with its duration"),
    debug: bool = DEBUG,
) -> None:
    """Create a bridge network: its own bridge (mr-NAME), subnet, gateway and masquerade rule."""
    from minirun.plan import Narrator
    from minirun.runtime import networks
    from minirun.spec import validate_mtu

    narrator = Narrator.for_flags(explain=explain, dry_run=dry_run, verbose=verbose)
    made = _managed(
        lambda: networks.create(name, subnet, gateway, internal, validate_mtu(mtu), narrator, dry_run),
        debug,
        dry_run=dry_run,
    )
    if made is not None:
        typer.echo(made["id"])


@network_app.command("ls")
def network_ls_cmd(fmt: str = typer.Option("table", "--format", help="table or json"), debug: bool = DEBUG) -> None:
    """List networks: NAME, BRIDGE, SUBNET, GATEWAY, INTERNAL, CONTAINERS."""
    from minirun.runtime import networks

    rows = _managed(networks.rows, debug, full=True)
    if fmt == "json":
        for row in rows:
            typer.echo(json.dumps(row))
        return
    _table(
        ("NAME", "BRIDGE", "SUBNET", "GATEWAY", "INTERNAL", "CONTAINERS"),
        [
            (r["Name"], r["Bridge"], r["Subnet"], r["Gateway"], str(r["Internal"]).lower(), str(len(r["Containers"])))
            for r in rows
        ],
    )


@network_app.command("inspect")
def network_inspect_cmd(name: str = typer.Argument(..., metavar="NAME"), debug: bool = DEBUG) -> None:
    """Show a network as JSON."""
    from minirun.runtime import networks

    typer.echo(json.dumps(_managed(lambda: networks.inspect(name), debug), indent=4))


@network_app.command("rm")
def network_rm_cmd(
    names: list[str] = typer.Argument(..., metavar="NAME..."),
    explain: bool = EXPLAIN,
    verbose: bool = VERBOSE,
    debug: bool = DEBUG,
) -> None:
    """Remove networks that no container or pod uses: bridge, rules, records."""
    from minirun.runtime import networks

    narrator = _narrator(explain, verbose)
    _each(names, lambda name: networks.remove(name, narrator), debug)


image_app = _subapp(
    "image", "Images: root filesystems built from a recipe or imported from 'docker save' and OCI archives."
)


@image_app.command("build")
def image_build_cmd(
    recipe: str = typer.Argument(..., metavar="DIR|NAME"),
    tag: str = typer.Option(None, "-t", "--tag", help="store it as NAME[:TAG] (default: the recipe's name)"),
    debug: bool = DEBUG,
) -> None:
    """Build an image from a recipe directory (image.toml + rootfs/) or a shipped recipe's name."""
    from minirun.runtime import images

    image = _managed(lambda: images.build(recipe, tag), debug)
    typer.echo(f"sha256:{image.id} {image.name}")


@image_app.command("import")
def image_import_cmd(
    source: str = typer.Argument(..., metavar="FILE|-"),
    name: str = typer.Option(None, "--name", help="store it as NAME[:TAG] (default: the name the archive gives)"),
    debug: bool = DEBUG,
) -> None:
    """Import a 'docker save' tarball or an OCI image layout (directory or tar); - reads stdin."""
    from minirun.runtime import images

    image, devices = _managed(lambda: images.import_archive(source, name), debug)
    if devices:
        typer.echo(f"minirun: note: skipped {devices} device node(s): a container gets its own /dev", err=True)
    typer.echo(f"sha256:{image.id} {image.name}")


@image_app.command("ls")
def image_ls_cmd(fmt: str = typer.Option("table", "--format", help="table or json"), debug: bool = DEBUG) -> None:
    """List images: REPOSITORY, TAG, IMAGE ID, CREATED, SIZE."""
    from minirun.runtime import images, lifecycle

    if fmt not in ("table", "json"):
        report(MinirunError(f'unknown --format "{fmt}"', hint="use table or json"), debug=debug)
        raise typer.Exit(2)
    rows = _managed(images.rows, debug)
    if fmt == "json":
        for row in rows:
            typer.echo(json.dumps(row))
        return
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    _table(
        ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"),
        [
            (
                r["Repository"],
                r["Tag"],
                r["ID"],
                f"{lifecycle.human_duration(lifecycle.seconds_since(r['CreatedAt'], now))} ago",
                _human_size(r["Size"]),
            )
            for r in rows
        ],
    )


def _human_size(size: int) -> str:
    """Docker's units: decimal, up to two decimals (4.26MB)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            break
        value /= 1000
    return f"{value:.2f}".rstrip("0").rstrip(".") + unit


@image_app.command("inspect")
def image_inspect_cmd(refs: list[str] = typer.Argument(..., metavar="IMAGE..."), debug: bool = DEBUG) -> None:
    """Show images as JSON, in Docker's shape (Id, RepoTags, Created, Size, Config, RootFS)."""
    from minirun.runtime import images

    typer.echo(json.dumps(_managed(lambda: [images.inspect(ref) for ref in refs], debug), indent=4))


@image_app.command("rm")
def image_rm_cmd(refs: list[str] = typer.Argument(..., metavar="IMAGE..."), debug: bool = DEBUG) -> None:
    """Remove images: untag NAME (deleting the image with its last tag), or delete an ID and all its tags."""
    from minirun.runtime import images

    _each(refs, images.remove, debug)


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
