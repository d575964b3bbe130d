"""A container's teardown: the one path every end of a container takes (a foreground run's, the
supervisor's when a detached one exits, `rm -f`, `pod rm`, reconcile's for a dead owner).

`teardown()` releases its address, removes its published ports, makes sure its host veth is gone (the kernel
deletes it with the netns; we verify, and delete it ourselves only if it lingers), then either forgets it
(record, name, log, directory: foreground runs and --rm) or keeps it as "exited" for `ps -a`, `logs` and
`rm`. Every step runs even if another failed; "already gone" is success.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from minirun import jsonstore, paths
from minirun.errors import MinirunError
from minirun.plan import Narrator, Step, run_best_effort
from minirun.runtime import model, store

LINK_GRACE_SECONDS = 2.0


def _host_rtnl(host_rtnl):
    if host_rtnl is None:
        from minirun.net import attachment

        host_rtnl = attachment.open_host()
    return host_rtnl


def kill(record: dict[str, Any], timeout: float = 2.0) -> None:
    """SIGKILL the container's PID 1 (the kernel then kills its whole PID namespace) and wait for it."""
    if not model.container_alive(record):
        return
    try:
        os.kill(record["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while model.container_alive(record) and time.monotonic() < deadline:
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
    """stop, then plan_detach's address, ports and veth (those the record holds), in that order."""
    container_id = record["id"]
    pid = record.get("pid")
    stop = Step(
        "stop",
        lambda: kill(record),
        lambda: (
            [f"kill -KILL {pid}   # PID 1: the kernel then kills its whole PID namespace"]
            if pid
            else ["# never started"]
        ),
    )
    net = record.get("network")
    address = (net or {}).get("address", "").split("/")[0]
    bridged = record.get("network_mode", "bridge") == "bridge"
    if not (net or bridged or record.get("ports")):
        return [stop]  # a pod member's or --network none|host: it holds nothing on the network (net/ not loaded)
    from minirun.net import attachment
    from minirun.net.network import from_attachment

    detach = attachment.Detach(
        from_attachment(net or {}),  # None when the record lacks it: ports then go without releasing 127/8
        container_id,
        addresses=(address,) if net and address else (),
        # A rebuilt record read its ports from the rules tagged with its id, or could not: remove whatever is tagged
        port_owner=container_id if record.get("ports") or (record.get("rebuilt") and net) else None,
        host_veth=((net or {}).get("host_veth") or attachment.host_veth_name(container_id)) if bridged else None,
    )
    pool = attachment.AddressStore(paths.ipam_dir((net or {}).get("name", "")))  # used only when net names one

    def veth_gone(ipr, veth: str) -> bool:
        if not attachment.has_interface(ipr, veth):
            return False
        if defer_link_check:
            _verify_link_gone_in_background(ipr, veth)
            return False
        return remove_lingering_link(ipr, veth)

    # Without port rules to remove the firewall is not asked anything: its nft driver need not even load.
    firewall = attachment.select_driver("nft" if detach.port_owner else "none")
    steps = attachment.plan_detach(detach, pool, firewall, lambda: _host_rtnl(host_rtnl), removed, veth_gone)
    return [stop, *(steps[name] for name in attachment.DETACH_ORDER if name in steps)]


def forget(record: dict[str, Any]) -> list[str]:
    """Remove the log, the container's directory (its image layer) and then the record and name claim: the
    record goes last, so whoever sees it gone (`rm`, a test, reconcile's orphan rule) finds its files gone."""
    if record.get("log"):
        jsonstore.remove_file(record["log"])
    remove_container_dir(record["id"])
    store.remove(record)
    # After the record: a policy restart due meanwhile finds no record (rather than a record without its mark).
    jsonstore.remove_file(paths.stopped_by_hand_mark(record["id"]))
    if record.get("image"):
        from minirun.runtime import image_admin

        image_admin.prune_unused()
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
        elif store.has_record(record["id"]):  # not removed meanwhile by `rm -f`
            model.move_container(record, model.ContainerStatus.EXITED)
            record.setdefault("exit_code", model.EXIT_STATUS_LOST)
            store.save(record)
    return removed


def remove_lingering_link(ipr, name: str, grace: float = LINK_GRACE_SECONDS) -> bool:
    """Give the kernel `grace` seconds to destroy the veth with its netns, then delete it ourselves."""
    from minirun.net import attachment

    deadline = time.monotonic() + grace
    while attachment.has_interface(ipr, name) and time.monotonic() < deadline:
        time.sleep(0.002)
    return attachment.delete_link(ipr, name)


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


def warn(exc: MinirunError) -> None:
    print(f"minirun: warning: {exc}", file=sys.stderr)


def remove_container_dir(container_id: str) -> bool:
    """Remove a container's directory; what cannot go (an immutable file the container made...) is reported
    in one line on stderr and left for a later `gc`: it never stops the command that found it."""
    from minirun.runtime.container import config

    try:
        return config.remove_container_dir(container_id)
    except MinirunError as exc:
        warn(exc)
        return False
