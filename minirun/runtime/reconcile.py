"""Crash recovery: what dead owners left behind is rolled back, torn down or released.

`reconcile()` runs at the start of every `minirun` command. A container whose owner (its foreground
launcher, or the supervisor of detached containers) is dead is dealt with: still being created -> rolled
back; its process gone -> torn down and marked exited; its process alive but unwatched (the supervisor was
killed) -> left running, and torn down by the first command that finds it gone. A pod whose creator died
mid-create is rolled back. Address reservations and name claims whose container has no record are
released. So even `kill -9` of minirun leaves nothing behind once minirun runs again. When every process
that may be changing state is alive, the whole pass is skipped (runtime/owners.py).

The order of reads is the point of this module: what may be orphaned is listed before the records that
would own it, and an orphan is read again after its owner was seen dead (see _still_orphaned).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from minirun import jsonstore, paths
from minirun.errors import MinirunError, TeardownError
from minirun.kernel import proc
from minirun.plan import Narrator
from minirun.runtime import model, owners, store
from minirun.runtime.container import teardown
from minirun.runtime.model import PodStatus

if TYPE_CHECKING:
    from minirun.net.attachment import Reservation


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
    from minirun.net import attachment

    # Snapshot reservations and claims BEFORE the records: a run writes its record first, so anything
    # listed here that lacks a record was really orphaned.
    reservations = attachment.all_reservations(paths.ipam_root())
    claims = store.name_claims()
    removed, pods, settled = _reconcile_pods_first(narrator)
    # Listed before the records, as above: a directory is made only after its record is written.
    directories = store.container_dirs()
    pod_directories = store.pod_data_dirs()
    records = store.all_records()
    store.test_pause()
    removed += [
        f"temp file {name}"
        # Every directory of records written whole through a temp file (jsonstore): a kill -9 mid-write
        # leaves its temp file behind (the kill campaign found one in pods/).
        for d in (paths.containers_dir(), paths.names_dir(), paths.pods_dir(), paths.networks_dir())
        for name in jsonstore.sweep_temp_files(d)
    ]
    if pod_directories:
        removed += _remove_orphan_pod_dirs(pod_directories)
    if not records and not reservations and not claims and not directories:
        return removed, settled
    torn_down, known, damaged, done = _reconcile_containers(records, narrator)
    removed += torn_down
    for orphan in directories - known:
        if teardown.remove_container_dir(orphan):
            removed.append(f"directory of container {orphan}")
    live, watched = _live_records()
    holders = store.holder_ids(live, pods) | damaged  # damaged: also those set aside by this very pass
    released, all_released = _release_unheld(reservations, claims, holders, known)
    return removed + released, settled and done and watched and all_released


def _reconcile_pods_first(narrator: Narrator | None) -> tuple[list[str], set[str], bool]:
    """Interrupted pods are rolled back: (what went, the pods there are now, whether it all went well)."""
    pods = store.pod_ids()
    if not pods:
        return [], pods, True
    try:
        removed_pods = reconcile_pods(narrator)
    except MinirunError as exc:  # reported; the rest of the cleanup and the command go on
        teardown.warn(exc)
        return [], store.pod_ids(), False
    return removed_pods, store.pod_ids(), True


def _reconcile_containers(
    records: list[dict[str, Any]], narrator: Narrator | None
) -> tuple[list[str], set[str], set[str], bool]:
    """Each container whose owner is dead is dealt with (_reconcile_orphan); a damaged record is set aside.
    Returns what went, every id known (damaged ones too), the damaged ids, and whether every teardown
    completed."""
    removed: list[str] = []
    settled = True
    # A record that cannot be read is never evidence that what it describes is free: its id keeps holding
    # its address, name, directory and veth until an operator releases them (gc --damaged -f).
    damaged = set(store.damaged_records())
    known = set(damaged)
    for record in records:
        known.add(record["id"])
        if record.get("corrupt"):
            aside = store.set_aside(record["id"])
            if aside:
                _rebuild_damaged(record["id"], aside)
            damaged.add(record["id"])
            continue
        if model.is_at_rest(record) or store.owner_alive(record):
            continue
        store.test_pause()
        orphan = _still_orphaned(record)
        if orphan is None:
            continue
        try:
            removed += _reconcile_orphan(orphan, narrator)
        except TeardownError as exc:
            teardown.warn(exc)
            settled = False
    return removed, known, damaged, settled


def _live_records() -> tuple[list[dict[str, Any]], bool]:
    """The live records, read again (a damaged one holds, too), and whether each has a watching owner."""
    live = [r for r in store.all_records() if model.is_live(r)]
    settled, unwatched = True, False
    for record in live:
        if record.get("corrupt"):
            settled = False  # damaged since the first read: the next pass sets it aside
        elif store.owner_alive(record):
            owners.adopt(record["owner"])  # an owner from before the registry must be watched from now on
        else:
            settled = False  # unwatched (its supervisor died): every command looks until it is adopted
            unwatched = unwatched or (bool(record.get("detached")) and model.container_alive(record))
    if unwatched:
        _summon_supervisor()
    return live, settled


def _summon_supervisor() -> None:
    """A detached container runs on after its supervisor was killed: start a new one, which adopts it and
    tears it down when it ends (supervisor/adoption.py). Best effort: until it runs, every command looks."""
    from minirun.runtime.supervisor import client

    try:
        client.start_unless_running()
    except OSError as exc:
        print(f"minirun: warning: could not start the supervisor to adopt running containers: {exc}", file=sys.stderr)


def _release_unheld(
    reservations: dict[str, dict[str, Reservation]], claims: dict[str, str], holders: set[str], known: set[str]
) -> tuple[list[str], bool]:
    """Addresses and name claims (snapshotted before the records) whose owner holds nothing now: released.
    Addresses are held back while a damaged pod record exists (it may be its): then not settled."""
    removed: list[str] = []
    settled = True
    held_back = store.damaged_pods_exist()
    for network, addresses in reservations.items():
        if any(held.owner not in holders for held in addresses.values()):
            if held_back:
                settled = False
            else:
                removed += _release_orphans(network, addresses, holders)
    for name, owner in claims.items():
        if owner not in known and store.read_name(name) == owner:
            jsonstore.remove_file(paths.name_claim(name))
            removed.append(f"name {name}")
    return removed, settled


def reconcile_pods(narrator: Narrator | None = None) -> list[str]:
    """Pods whose creation was interrupted (their creator died) are rolled back."""
    removed = []
    pods = store.all_pods()
    store.test_pause()
    for pod in pods:
        if not _interrupted(pod):
            continue
        store.test_pause()
        # Read again now that the creator was seen dead: it writes the finished record before it exits,
        # so only this read shows whether it finished (see _still_orphaned).
        fresh = store.load_pod(pod["name"])
        if fresh is not None and fresh.get("id") == pod.get("id") and _interrupted(fresh):
            # Imported here: only an interrupted pod needs it, and every run passes through reconcile.
            from minirun.runtime import pod_teardown

            removed += [f"{item} (interrupted pod {pod['name']})" for item in pod_teardown.release(fresh, narrator)]
    return removed


def _interrupted(pod: dict[str, Any]) -> bool:
    owner = pod.get("owner")
    return pod.get("status") == PodStatus.CREATING and bool(owner) and not proc.is_alive(owner["pid"], owner["started"])


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
    from minirun.runtime.container import config

    recorded = set(jsonstore.record_names(paths.pods_dir()))
    removed = []
    for name in sorted(listed - recorded):
        try:
            if config.remove_pod_etc(name):
                removed.append(f"directory of pod {name}")
        except MinirunError as exc:  # what a member made there (an immutable file): reported, never fatal
            teardown.warn(exc)
    return removed


def _still_orphaned(record: dict[str, Any]) -> dict[str, Any] | None:
    """The record as it is now, if its owner is still dead in it; None if it changed hands or went.

    `record` was read before its owner was seen dead, and an owner writes its last word before it exits
    (a worker hands a detached container to the supervisor, then exits): so only a read made after the
    owner was seen dead shows the final state. Acting on the first read lost live containers."""
    fresh = store.load(record["id"])
    if fresh is None or fresh.get("corrupt") or model.is_at_rest(fresh) or store.owner_alive(fresh):
        return None
    return fresh


def _reconcile_orphan(record: dict[str, Any], narrator: Narrator | None = None) -> list[str]:
    label = f"(container {record['id']})"
    if record.get("status") == model.ContainerStatus.CREATING or not record.get("detached"):
        record["auto_remove"] = True  # never finished starting, or a foreground run whose launcher died
        return [f"{item} {label}" for item in teardown.teardown(record, narrator=narrator)]
    if model.container_alive(record):
        return []  # detached and still running: its supervisor died, the container did not
    record["exit_code"] = record.get("exit_code", model.EXIT_STATUS_LOST)
    record["finished"] = record.get("finished") or store.now_iso()
    items = teardown.teardown(record, narrator=narrator)
    return [f"{item} {label}" for item in items] + ([] if record.get("auto_remove") else [f"exited {label}"])


def remove_orphan_links(bridge: str) -> list[str]:
    """Delete host veths on `bridge` that belong to no live container or pod (e.g. a killed verifier's)."""
    from minirun.net import attachment
    from minirun.net import bridge as bridges

    if store.damaged_pods_exist():
        return []  # one of them may be a damaged pod's (see store.damaged_pods_exist)
    with attachment.open_host() as ipr:
        return bridges.delete_unowned_veths(ipr, bridge, store.holder_ids)


def _release_orphans(network: str, addresses: dict[str, Reservation], holders: set[str]) -> list[str]:
    from minirun.net import attachment

    pool = attachment.AddressStore(paths.ipam_dir(network))
    removed = []
    for address, held in addresses.items():
        if held.owner not in holders and pool.release(address, held.owner):
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
