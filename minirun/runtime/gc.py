"""Teardown and crash reconciliation.

`teardown()` ends one container: release its address, make sure its host veth is gone (the kernel deletes
it with the netns; we verify, and delete it ourselves only if it lingers), then either forget it (record,
name, log: foreground runs and --rm) or keep it as "exited" for `ps -a`, `logs` and `rm`. Every step runs
even if another failed; "already gone" is success.

`reconcile()` runs at the start of every `minirun` command. A container whose owner (its foreground
launcher, or the supervisor of detached containers) is dead is dealt with: still being created -> rolled
back; its process gone -> torn down and marked exited; its process alive but unwatched (the supervisor was
killed) -> left running, and torn down by the first command that finds it gone. Address reservations and
name claims whose container has no record are released. So even `kill -9` of minirun leaves nothing
behind once minirun runs again.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from minirun.runtime import upgrade_guard  # noqa: F401 - first: a supervisor's upgrade (see there)

# isort: split
from minirun import jsonstore, paths
from minirun.errors import MinirunError, TeardownError
from minirun.kernel import proc
from minirun.plan import Narrator, Step, run_best_effort
from minirun.runtime import model, owners, state

if TYPE_CHECKING:
    from minirun.net.ipam import Reservation

LINK_GRACE_SECONDS = 2.0
# Docker's code for "the exit status is unknown": the process ended while nobody was watching it.
EXIT_STATUS_LOST = 255


def _host_rtnl(host_rtnl):
    if host_rtnl is None:
        from minirun.net import rtnl

        host_rtnl = rtnl.Rtnl()
    return host_rtnl


def container_alive(record: dict[str, Any]) -> bool:
    pid, started = record.get("pid"), record.get("pid_started")
    return isinstance(pid, int) and isinstance(started, int) and proc.is_alive(pid, started)


def kill_container(record: dict[str, Any], timeout: float = 2.0) -> None:
    """SIGKILL the container's PID 1 (the kernel then kills its whole PID namespace) and wait for it."""
    if not container_alive(record):
        return
    try:
        os.kill(record["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while container_alive(record) and time.monotonic() < deadline:
        time.sleep(0.005)


def release_resources(
    record: dict[str, Any], *, host_rtnl=None, defer_link_check: bool = False, narrator: Narrator | None = None
) -> list[str]:
    """Kill what still runs, release the address and ports, make sure the host veth is gone.

    Every step runs even if another failed; raises TeardownError listing the failures. The host veth dies
    with the container's netns, but the kernel destroys a netns asynchronously (10-20 ms here, an RCU
    grace period or two). With defer_link_check the caller does not wait for that: a detached verifier
    process watches the veth and deletes it if it lingers, and the caller returns at once.
    """
    removed: list[str] = []
    steps = release_steps(record, removed, host_rtnl=host_rtnl, defer_link_check=defer_link_check)
    run_best_effort(steps, f"teardown of container {record['id']} was incomplete", narrator)
    return removed


def release_steps(
    record: dict[str, Any], removed: list[str], *, host_rtnl=None, defer_link_check: bool = False
) -> list[Step]:
    from minirun.net import firewall_tags, ipam, links

    container_id = record["id"]
    pid = record.get("pid")
    steps = [
        Step(
            "stop",
            lambda: kill_container(record),
            lambda: (
                [f"kill -KILL {pid}   # PID 1: the kernel then kills its whole PID namespace"]
                if pid
                else ["# never started"]
            ),
        )
    ]
    net = record.get("network")
    address = (net or {}).get("address", "").split("/")[0]
    if net and address:
        store = ipam.AddressStore(paths.ipam_dir(net["name"]))

        def release_address() -> None:
            if store.release(address, container_id):
                removed.append(f"address {address}")

        steps.append(Step("address", release_address, lambda: [f"rm {store.directory}/{address}   # back in the pool"]))
    # A rebuilt record read its ports from the rules tagged with its id, or could not: remove whatever is tagged
    if record.get("ports") or (record.get("rebuilt") and net):

        def unpublish() -> None:
            from minirun.net import firewall
            from minirun.net.network import from_attachment

            if firewall.remove_ports(container_id, from_attachment(net or {})):
                removed.append("published ports")

        steps.append(
            Step(
                "ports",
                unpublish,
                lambda: [
                    f"nft delete rule {firewall_tags.TABLE_REF} <chain> handle <h>   # each rule tagged "
                    f'"{firewall_tags.port_owner_tag(container_id)}" (nft -a list table {firewall_tags.TABLE_REF})'
                ],
            )
        )
    if record.get("network_mode", "bridge") == "bridge":
        veth = (net or {}).get("host_veth") or links.host_veth_name(container_id)

        def veth_gone() -> None:
            ipr = _host_rtnl(host_rtnl)
            if links.get_link(ipr, veth) is not None:
                if defer_link_check:
                    _verify_link_gone_in_background(ipr, veth)
                elif remove_lingering_link(ipr, veth):
                    removed.append(f"link {veth}")

        steps.append(
            Step(
                "veth",
                veth_gone,
                lambda: [f"# {veth} goes with the container's netns; if it lingers: ip link delete {veth}"],
            )
        )
    return steps


def forget(record: dict[str, Any]) -> list[str]:
    """Remove the log, the container's directory (its image layer) and then the record and name claim: the
    record goes last, so whoever sees it gone (`rm`, a test, reconcile's orphan rule) finds its files gone."""
    if record.get("log"):
        jsonstore.remove_file(record["log"])
    remove_container_dir(record["id"])
    state.remove(record)
    if record.get("image"):
        from minirun.runtime import images

        images.prune_unused()
    return [f"record {record['id']}"]


def teardown(
    record: dict[str, Any], *, host_rtnl=None, defer_link_check: bool = False, narrator: Narrator | None = None
) -> list[str]:
    """End a container that has exited: release everything; keep it as exited unless it is auto-removed."""
    removed = []
    try:
        removed = release_resources(record, host_rtnl=host_rtnl, defer_link_check=defer_link_check, narrator=narrator)
    finally:
        if record.get("auto_remove", True):
            removed += forget(record)
            if narrator is not None:
                files = [
                    paths.container_record(record["id"]),
                    paths.name_claim(record.get("name", "")),
                    record.get("log") or "",
                ]
                narrator.step(Step("records", lambda: None, lambda: [f"rm -f {' '.join(f for f in files if f)}"]))
        elif os.path.exists(paths.container_record(record["id"])):  # not removed meanwhile by `rm -f`
            model.move_container(record, model.ContainerStatus.EXITED)
            record.setdefault("exit_code", EXIT_STATUS_LOST)
            state.save(record)
    return removed


def remove_lingering_link(ipr, name: str, grace: float = LINK_GRACE_SECONDS) -> bool:
    """Give the kernel `grace` seconds to destroy the veth with its netns, then delete it ourselves."""
    from minirun.net import links

    deadline = time.monotonic() + grace
    while links.get_link(ipr, name) is not None and time.monotonic() < deadline:
        time.sleep(0.002)
    return links.delete_link(ipr, name)


def _verify_link_gone_in_background(ipr, name: str) -> None:
    """Fork a verifier that outlives the launcher by at most LINK_GRACE_SECONDS.

    Its stdio goes to /dev/null: a caller that captures minirun's output must not wait for it.
    """
    if os.fork() != 0:
        return
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        remove_lingering_link(ipr, name)
    finally:
        os._exit(0)


def _warn(exc: MinirunError) -> None:
    print(f"minirun: warning: {exc}", file=sys.stderr)


def remove_container_dir(container_id: str) -> bool:
    """Remove a container's directory; what cannot go (an immutable file the container made...) is reported
    in one line on stderr and left for a later `gc`: it never stops the command that found it."""
    from minirun.runtime import sandbox

    try:
        return sandbox.remove_container_dir(container_id)
    except MinirunError as exc:
        _warn(exc)
        return False


def reconcile(narrator: Narrator | None = None, *, full: bool = False) -> list[str]:
    """Deal with what dead owners left behind. When every process that may be changing minirun's state is
    alive there is nothing to deal with, and this costs one listdir (see runtime/owners.py); `full` looks at
    everything anyway (`gc`, and listings that read every record themselves)."""
    registry_known = owners.enter()
    gone = owners.dead()
    if registry_known and not gone and not full:
        return []
    removed, settled = _reconcile_everything(narrator)
    if settled:
        owners.forget(gone)
    else:
        owners.mark_pending()  # whoever left it, the next commands look again (gone may be empty)
    return removed


def _reconcile_everything(narrator: Narrator | None) -> tuple[list[str], bool]:
    """The full pass: (what it removed, whether it left nothing pending). Pending: a container whose owner
    is dead but whose process runs on (unwatched), a step that failed, orphans held back by damage."""
    from minirun.net import ipam

    settled = True
    # Snapshot reservations and claims BEFORE the records: a run writes its record first, so anything
    # listed here that lacks a record was really orphaned.
    reservations = ipam.all_reservations(paths.ipam_root())
    claims = state.name_claims()
    pods = _pod_ids()
    if pods:
        from minirun.runtime import pod

        try:
            removed_pods = pod.reconcile(narrator)
        except MinirunError as exc:  # reported; the rest of the cleanup and the command go on
            _warn(exc)
            removed_pods, settled = [], False
        pods = _pod_ids()
    else:
        removed_pods = []
    # Listed before the records, as above: a directory is made only after its record is written.
    directories = _container_dirs()
    pod_directories = _pod_data_dirs()
    records = state.all_records()
    state.test_pause()
    removed = removed_pods + [
        f"temp file {name}"
        for d in (paths.containers_dir(), paths.names_dir())
        for name in jsonstore.sweep_temp_files(d)
    ]
    if pod_directories:
        removed += _remove_orphan_pod_dirs(pod_directories)
    if not records and not reservations and not claims and not directories:
        return removed, settled
    # A record that cannot be read is never evidence that what it describes is free: its id keeps holding
    # its address, name, directory and veth until an operator releases them (gc --damaged -f).
    damaged = set(state.damaged_records())
    known = set(damaged)
    for record in records:
        known.add(record["id"])
        if record.get("corrupt"):
            aside = state.set_aside(record["id"])
            if aside:
                _rebuild_damaged(record["id"], aside)
            damaged.add(record["id"])
            continue
        if model.is_exited(record) or state.owner_alive(record):
            continue
        state.test_pause()
        orphan = _still_orphaned(record)
        if orphan is None:
            continue
        try:
            removed += _reconcile_orphan(orphan, narrator)
        except TeardownError as exc:
            _warn(exc)
            settled = False
    for orphan in directories - known:
        if remove_container_dir(orphan):
            removed.append(f"directory of container {orphan}")
    live = [r for r in state.all_records() if model.is_live(r)]  # a damaged one holds, too
    for record in live:
        if record.get("corrupt"):
            settled = False  # damaged since the first read: the next pass sets it aside
        elif state.owner_alive(record):
            owners.adopt(record["owner"])  # an owner from before the registry must be watched from now on
        else:
            settled = False  # unwatched (its supervisor died): every command looks until it ends
    holders = {r["id"] for r in live} | pods | damaged
    held_back = _damaged_pods_exist()
    for network, addresses in reservations.items():
        if any(held.owner not in holders for held in addresses.values()):
            if held_back:
                settled = False
            else:
                removed += _release_orphans(network, addresses, holders)
    for name, owner in claims.items():
        if owner not in known and state.read_name(name) == owner:
            jsonstore.remove_file(paths.name_claim(name))
            removed.append(f"name {name}")
    return removed, settled


def _rebuild_damaged(container_id: str, aside: str) -> None:
    """A damaged record was just set aside: if its container provably still runs, it gets a record rebuilt
    from the kernel (runtime.rebuild); else what it may hold stays reserved. One warning either way."""
    from minirun.runtime import rebuild

    outcome = rebuild.attempt(container_id)
    if outcome.record is not None:
        print(
            f"minirun: warning: the record of container {container_id} is damaged; moved to {aside}; its "
            f"container still runs, so its record was rebuilt from the kernel ({outcome.reason}); what could "
            f"not be recovered shows as unknown in 'minirun inspect {container_id}'",
            file=sys.stderr,
        )
        return
    print(
        f"minirun: warning: the record of container {container_id} is damaged; moved to {aside}, and what the "
        f"container may hold (address, name, veth, files) stays reserved (not rebuilt: {outcome.reason}); see "
        "'minirun gc --damaged'",
        file=sys.stderr,
    )


def _remove_orphan_pod_dirs(listed: set[str]) -> list[str]:
    """A pod's directory whose pod has no record (read after the listing, so a pod being created keeps it).
    A pod record that cannot be read still counts: it is never evidence that its files are free."""
    from minirun.runtime import sandbox

    recorded = set(jsonstore.record_names(paths.pods_dir()))
    removed = []
    for name in sorted(listed - recorded):
        try:
            if sandbox.remove_pod_etc(name):
                removed.append(f"directory of pod {name}")
        except MinirunError as exc:  # what a member made there (an immutable file): reported, never fatal
            _warn(exc)
    return removed


def _still_orphaned(record: dict[str, Any]) -> dict[str, Any] | None:
    """The record as it is now, if its owner is still dead in it; None if it changed hands or went.

    `record` was read before its owner was seen dead, and an owner writes its last word before it exits
    (a worker hands a detached container to the supervisor, then exits): so only a read made after the
    owner was seen dead shows the final state. Acting on the first read lost live containers."""
    fresh = state.load(record["id"])
    if fresh is None or fresh.get("corrupt") or model.is_exited(fresh) or state.owner_alive(fresh):
        return None
    return fresh


def _reconcile_orphan(record: dict[str, Any], narrator: Narrator | None = None) -> list[str]:
    label = f"(container {record['id']})"
    if record.get("status") == model.ContainerStatus.CREATING or not record.get("detached"):
        record["auto_remove"] = True  # never finished starting, or a foreground run whose launcher died
        return [f"{item} {label}" for item in teardown(record, narrator=narrator)]
    if container_alive(record):
        return []  # detached and still running: its supervisor died, the container did not
    record["exit_code"] = record.get("exit_code", EXIT_STATUS_LOST)
    record["finished"] = record.get("finished") or state.now_iso()
    items = teardown(record, narrator=narrator)
    return [f"{item} {label}" for item in items] + ([] if record.get("auto_remove") else [f"exited {label}"])


def remove_orphan_links(bridge: str) -> list[str]:
    """Delete host veths on `bridge` that belong to no live container or pod (e.g. a killed verifier's)."""
    from minirun.net import links, rtnl

    removed: list[str] = []
    if _damaged_pods_exist():
        return removed  # one of them may be a damaged pod's (see _damaged_pods_exist)
    with rtnl.Rtnl() as ipr:
        master = links.get_link(ipr, bridge)
        if master is None:
            return removed
        # Links first, owners after: a container writes its record before it makes its veth, so a veth
        # listed here whose owner is in no record read afterwards really is an orphan (the other order
        # cut the veth of a container created in between).
        ports = [link for link in links.list_links(ipr) if link.master == master.index and link.kind == "veth"]
        owners = {r["id"] for r in state.all_records() if model.is_live(r)} | _pod_ids()
        owners |= set(state.damaged_records())
        live = {links.host_veth_name(owner) for owner in owners}
        for link in ports:
            if link.name not in live and links.delete_link(ipr, link.name):
                removed.append(f"link {link.name} (on {bridge}, no container)")
    return removed


def _container_dirs() -> set[str]:
    """Container ids with a directory, on the data root or (from before it moved there) the state root.
    A run writes its record before making its directory, so one listed here without a record is an orphan."""
    return _subdirs(os.path.join(paths.writable_root(), "containers")) | _subdirs(paths.containers_dir())


def _pod_data_dirs() -> set[str]:
    """Names of pods with a directory on the data root (their /etc files, written after the pod's record)."""
    return _subdirs(os.path.join(paths.writable_root(), "pods"))


def _subdirs(directory: str) -> set[str]:
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return set()
    with entries:
        return {e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)}


def _pod_ids() -> set[str]:
    """Ids of the pods on record (a pod's address and veth belong to the pod, not to a container)."""
    import json

    ids = set()
    for name in jsonstore.record_names(paths.pods_dir()):
        path = paths.pod_record(name)
        try:
            with open(path) as f:
                ids.add(json.load(f)["id"])
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError):
            # Never evidence that the pod's pins, address and veth are free: set aside, held (see reconcile).
            aside = state.set_aside_file(path)
            if aside:
                print(
                    f"minirun: warning: the record of pod {name} is damaged; moved to {aside}, "
                    "and what the pod may hold stays reserved; see 'minirun gc --damaged'",
                    file=sys.stderr,
                )
    return ids


def _damaged_pods_exist() -> bool:
    """A damaged pod record hides which address and veth are its own: while one exists, no address and no
    veth is released as an orphan (`gc --damaged -f` ends that)."""
    try:
        return any(state.DAMAGED_MARK in name for name in os.listdir(paths.pods_dir()))
    except FileNotFoundError:
        return False


def _release_orphans(network: str, addresses: dict[str, Reservation], holders: set[str]) -> list[str]:
    from minirun.net import ipam

    store = ipam.AddressStore(paths.ipam_dir(network))
    removed = []
    for address, held in addresses.items():
        if held.owner not in holders and store.release(address, held.owner):
            removed.append(f"address {address} (owner {held.owner})")
    return removed


def collect_garbage(narrator: Narrator | None = None) -> list[str]:
    """`minirun gc`: the full reconcile, then the host veths left on every network's bridge that no live
    container or pod owns. Returns what was removed, one line each."""
    from minirun.net.network import all_networks

    removed = reconcile(narrator, full=True)
    for network in all_networks():
        removed += remove_orphan_links(network.bridge)
    return removed
