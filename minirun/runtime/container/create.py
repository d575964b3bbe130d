"""Creating a container: validate, record, fork into new namespaces, attach the network, let it exec
(container/run.py then waits in the foreground or hands it to the supervisor).

The launcher stays in the host namespaces throughout; the container's first process is PID 1 of a new PID
namespace. See DESIGN.md "A run, step by step".
"""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from minirun.errors import MinirunError
from minirun.kernel import proc
from minirun.kernel import syscalls as k
from minirun.plan import Narrator, Step, Timing
from minirun.runtime import logfile, model, names, network_plan, reconcile, store
from minirun.runtime.container import child, config, launch, teardown
from minirun.runtime.model import ContainerStatus, move_container
from minirun.runtime.phases import Phase, describe_phases, run_phases
from minirun.runtime.privileges import require_root
from minirun.spec import ContainerSpec

if TYPE_CHECKING:
    from minirun.net.attachment import Attachment
    from minirun.net.network import Network

INIT_CANDIDATES = ("/usr/bin/tini", "/usr/bin/tini-static", "/usr/bin/docker-init")
_NSENTER_FLAG = {k.CLONE_NEWNET: "net", k.CLONE_NEWUTS: "uts", k.CLONE_NEWIPC: "ipc"}


def init_binary() -> str:
    """--init runs tini (Docker's docker-init is tini) as PID 1: it forwards signals and reaps zombies."""
    found = next((path for path in INIT_CANDIDATES if os.access(path, os.X_OK)), None)
    if found is None:
        raise MinirunError("--init needs tini, which is not installed", hint="apt-get install tini")
    return found


class Created:
    """A container whose network is attached and whose first process waits to exec."""

    __slots__ = ("record", "launch", "host_rtnl", "timings", "exec_step")

    def __init__(
        self, record: dict[str, Any], started: launch.Launch, host_rtnl, timings: list[Timing], exec_step: Step
    ) -> None:
        self.record = record
        self.launch = started
        self.host_rtnl = host_rtnl
        self.timings = timings
        self.exec_step = exec_step


class _Target(NamedTuple):
    """What validation found the container joins or attaches to."""

    pod: dict[str, Any] | None = None  # the pod it is a member of
    join: tuple[tuple[str, int], ...] = ()  # the pod's pins it setns()es into
    pid_namespace: str | None = None  # the pod's, when shared
    resolver: str | None = None
    network: Network | None = None  # a bridge network to attach to
    host_rtnl: Any = None  # the host's rtnetlink socket, for that attach


class _Plan(NamedTuple):
    """The run as phases (runtime/phases.py): the namespaces step, then the network's, which read the netns
    the first one made through `netns`."""

    phases: list[Phase]
    forked: list[launch.Launch]  # the container's first process, once the namespaces step ran
    netns: network_plan.NetnsHandle
    attachment: Attachment | None


def create(
    spec: ContainerSpec,
    *,
    detached: bool = False,
    stdio: tuple[int, int, int] | None = None,
    controlling_tty: bool = False,
    log_path: str | None = None,
    container_id: str | None = None,
    narrator: Narrator | None = None,
    dry_run: bool = False,
    previous: dict[str, Any] | None = None,
    restart_count: int = 0,
) -> Created | None:
    """Validate, record, fork and attach. On any failure everything done so far is rolled back.

    With `previous` (the record of a created or exited container, `start`): the same container again, its id,
    name, directory and log kept; a failure leaves its record as it was.

    With dry_run: validate, then describe the very steps a run would take (through `narrator`), with
    placeholders for what only running can tell, and change nothing. Returns None then.
    """
    timings: list[Timing] = []
    clock = time.perf_counter()
    require_root()
    if not dry_run:
        reconcile.reconcile()
    target = _validate(spec, detached, dry_run)
    if previous is not None:
        container_id, spec = previous["id"], spec._replace(name=previous["name"])
    container_id = container_id or model.new_container_id()
    name = spec.name or names.generate(container_id)
    hostname = target.pod["hostname"] if target.pod else spec.hostname or container_id
    view = config.plan(spec, spec.command, container_id, hostname, pod=target.pod, resolver=target.resolver)
    command = (init_binary(), "--", *view.command) if spec.init else view.command
    timings.append(Timing("validate", time.perf_counter() - clock))
    record = new_record(spec, view, container_id, name, hostname, target.pod, detached, log_path)
    if previous is not None:
        record.update(created=previous.get("created", record["created"]), restart_count=restart_count)
    cfg = child.ChildConfig(
        command=command,
        env=view.env,
        hostname=hostname,
        workdir=view.workdir,
        new_netns=target.pod is None and spec.network != "host",
        join=target.join,
        etc_dir=view.etc_dir,
        image_root=view.image_root,
        writable_dir=None if view.image_root is not None else os.path.join(config.container_dir(container_id), "host"),
        security=view.security,
        user=view.user,
        stdio=stdio,
        controlling_tty=controlling_tty,
        die_with_parent=not detached,
    )
    plan = _plan(spec, cfg, target, container_id)
    if dry_run:
        describe_phases(plan.phases, narrator, tail=[_exec_step(cfg)])
        return None
    started = _execute(plan, record, spec, view, target, timings, narrator, previous)
    return Created(record, started, target.host_rtnl, timings, _exec_step(cfg))


def _validate(spec: ContainerSpec, detached: bool, dry_run: bool) -> _Target:
    """The pod to join or the network to attach to, checked before anything changes."""
    if spec.pod is not None:
        # A member only joins: the pod's network was attached once, when the pod was made.
        from minirun.runtime import pod as pods

        if dry_run:  # joins only a pod that is ready: making one (pods.ensure) would change the host
            pod = store.load_pod(spec.pod)
            if pod is None or not model.is_ready(pod):
                state_of = "does not exist yet" if pod is None else "is not ready (being created, or interrupted)"
                raise MinirunError(
                    f"--dry-run of a member of pod {spec.pod}, which {state_of}",
                    hint=f"see what creating it does: minirun pod create --dry-run {spec.pod}",
                )
        else:
            pod = pods.ensure(spec.pod, quiet=detached)
        join = pods.join_paths(pod)
        pid_namespace = pods.pid_namespace(pod)
        return _Target(pod, join, pid_namespace, _resolver_for((pod.get("network") or {}).get("name"), dry_run))
    if spec.network in ("none", "host"):
        return _Target()
    from minirun.net import network as netdefs

    network = netdefs.resolve(spec.network)
    resolver = _resolver_for(network.name, dry_run)
    host_rtnl = network_plan.validate_bridge(network)
    if spec.ports:
        from minirun.net.ports import check_free

        check_free(spec.ports, store.published_ports())
    return _Target(resolver=resolver, network=network, host_rtnl=host_rtnl)


def new_record(
    spec: ContainerSpec,
    view: config.Sandbox,
    container_id: str,
    name: str,
    hostname: str,
    pod: dict[str, Any] | None,
    detached: bool,
    log_path: str | None,
) -> dict[str, Any]:
    """The container's record as it is first written (status creating)."""
    return {
        "id": container_id,
        "name": name,
        "hostname": hostname,
        "command": list(view.command),
        "env": [f"{key}={value}" for key, value in view.env.items()],
        "workdir": view.workdir,
        "created": store.now_iso(),
        "status": ContainerStatus.CREATING,
        "owner": model.owner_identity(),
        # "bridge" for every bridged network (its name is in "network"), as teardown expects
        "network_mode": "pod" if pod else spec.network if spec.network in ("none", "host") else "bridge",
        "pod": pod["name"] if pod else None,
        # A foreground run is always removed when it ends; a detached one only with --rm (Docker's -d).
        "auto_remove": spec.remove or not detached,
        "detached": detached,
        "init": spec.init,
        "tty": spec.tty,
        "log": log_path,
        "log_config": logfile.parse_options(spec.log_options).as_record(),
        "ports": [list(mapping) for mapping in spec.ports],
        **view.record_fields(),
        # What `start` needs to run it again (a foreground run is always removed when it ends).
        **({"spec": spec._asdict()} if detached else {}),
    }


def _plan(spec: ContainerSpec, cfg: child.ChildConfig, target: _Target, container_id: str) -> _Plan:
    """The one plan a run executes and a dry run describes: namespaces, then the network's steps (a bridge
    attach, lo alone for a netns of its own, or none when it shares the host's or its pod's)."""
    forked: list[launch.Launch] = []
    netns = network_plan.NetnsHandle("/proc/<pid>/ns/net")

    def fork() -> object:
        started = launch.fork_container(cfg, target.pid_namespace)
        forked.append(started)
        if started.netlink is not None:
            netns.fill(f"/proc/{started.pid}/ns/net", started.netlink)

        def undo() -> None:
            netns.close()
            started.abort()

        return undo

    namespaces = Step("namespaces", fork, lambda: _explain_namespaces(cfg, target.pid_namespace, forked))
    network = target.network
    attachment = network_plan.bridge_attachment(network, container_id, spec.mtu) if network is not None else None

    def network_steps() -> list[Step]:
        if attachment is not None:
            published = lambda: store.published_ports(exclude=container_id)  # noqa: E731
            return network_plan.bridge_steps(attachment, target.host_rtnl, netns, container_id, spec.ports, published)
        return network_plan.loopback_steps(netns) if cfg.new_netns else []

    return _Plan([lambda: [namespaces], network_steps], forked, netns, attachment)


def _execute(
    plan: _Plan,
    record: dict[str, Any],
    spec: ContainerSpec,
    view: config.Sandbox,
    target: _Target,
    timings: list[Timing],
    narrator: Narrator | None,
    previous: dict[str, Any] | None = None,
) -> launch.Launch:
    """Record, then run the plan; the container is running when this returns. Any failure rolls back."""
    container_id, hostname = record["id"], record["hostname"]
    with contextlib.ExitStack() as undo:
        # The record is written before the name claim and the address, so `gc` never mistakes either for
        # an orphan while this run is still setting up.
        store.save(record)
        if previous is None:
            undo.callback(store.remove_record, container_id)
            store.claim_name(record["name"], container_id)
            undo.callback(store.release_name, record["name"], container_id)
            undo.callback(teardown.remove_container_dir, container_id)
        else:  # started again: its name, directory and log stay; a failure leaves the record as it was
            undo.callback(store.save, previous)
        if view.image is not None and not os.path.isdir(view.image.rootfs):
            # Removed (rebuilt and pruned) after we resolved it; from now on our record keeps it in use.
            raise MinirunError(f"image {spec.image} was removed while the container started", hint="run it again")
        pod_address = (target.pod.get("network") or {}).get("address", "").split("/")[0] if target.pod else None
        config.materialize(view, container_id, hostname, pod_address or None)
        run_phases(plan.phases, undo, timings, narrator)
        started = plan.forked[0]
        move_container(
            record,
            ContainerStatus.RUNNING,
            pid=started.pid,
            pid_started=proc.start_time(started.pid),
            started=store.now_iso(),
        )
        if plan.attachment is not None:
            record["network"] = plan.attachment.as_record()
            config.set_address(view, hostname, plan.attachment.as_record()["address"].split("/")[0])
        store.save(record)
        plan.netns.close()
        started.close_netns_handles()
        undo.pop_all()  # from here on the container runs; teardown (not rollback) cleans up
    return started


def _resolver_for(network_name: str | None, dry_run: bool) -> str | None:
    """A user network's resolver address (its gateway), running; None on the default network (no DNS)."""
    from minirun.net import network as netdefs

    if not network_name or network_name == netdefs.DEFAULT_NETWORK:
        return None
    from minirun.runtime.supervisor import client

    network = netdefs.resolve(network_name)
    if not dry_run:
        client.ensure_resolver()
    return str(network.gateway)


def _explain_namespaces(cfg: child.ChildConfig, pid_namespace: str | None, forked: list) -> list[str]:
    """The `unshare`/`nsenter` a person would type for what fork_container and the child do."""
    pid = forked[0].pid if forked else "<pid>"
    joined = {flag for _, flag in cfg.join}
    lines = []
    enter = [f"--{_NSENTER_FLAG[flag]}={path}" for path, flag in cfg.join]
    if pid_namespace:
        enter.append(f"--pid={pid_namespace}")
    unshare = ["--mount", "--propagation", "private", "--mount-proc"]
    if not pid_namespace:
        unshare[:0] = ["--pid", "--fork"]
    if cfg.new_netns:
        unshare.append("--net")
    unshare += [opt for flag, opt in ((k.CLONE_NEWUTS, "--uts"), (k.CLONE_NEWIPC, "--ipc")) if flag not in joined]
    prefix = f"nsenter {' '.join(enter)} " if enter else ""
    lines.append(f"{prefix}unshare {' '.join(unshare)} sh   # the container's first process: host PID {pid}")
    if k.CLONE_NEWUTS not in joined:
        lines.append(f"hostname {cfg.hostname}")
    from minirun.fs import rootfs

    confined = cfg.security is None or not cfg.security.privileged
    if cfg.image_root is not None:
        return lines + rootfs.explain_image(cfg.image_root, cfg.etc_dir, confined)
    own_sysfs = cfg.new_netns or k.CLONE_NEWNET in joined
    return lines + rootfs.explain_host(cfg.etc_dir, confined=confined, own_sysfs=own_sysfs)


def _exec_step(cfg: child.ChildConfig) -> Step:
    def explain() -> list[str]:
        where = f"cd {cfg.workdir} && " if cfg.workdir else ""
        lines = []
        if cfg.security is not None:
            lines.append(f"# confine: {cfg.security.describe()}")
        if cfg.user is not None:
            uid, gid, groups = cfg.user
            lines.append(
                f"setpriv --reuid {uid} --regid {gid} --groups {','.join(map(str, groups))}"
                "   # the user and its groups, from the container's /etc/passwd and /etc/group"
            )
        lines.append(f"{where}exec {shlex.join(cfg.command)}   # as PID 1 (see 'minirun run --help' for exit codes)")
        return lines

    return Step("exec", lambda: None, explain)
