"""A pod's namespaces pinned on paths, and the pod's teardown: the one path a pod ends by (`pod rm`, a
create that failed or was interrupted, `gc --damaged -f`).

The namespaces are pinned the way `ip netns add` pins them: the nsfs file of the holder's namespace
bind-mounted on a path (ip-netns(8)); unmounting the pin drops the last reference, and the kernel then
deletes the netns and with it the pod's veth.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

from minirun import jsonstore, paths
from minirun.kernel import proc
from minirun.kernel import syscalls as k
from minirun.plan import Narrator, Step, run_best_effort
from minirun.runtime import store
from minirun.runtime.container import teardown
from minirun.runtime.model import PodStatus

SHAREABLE = {"net": k.CLONE_NEWNET, "uts": k.CLONE_NEWUTS, "ipc": k.CLONE_NEWIPC, "pid": k.CLONE_NEWPID}


DEFAULT_SHARE = ("net", "uts", "ipc")


def release_damaged(name: str) -> list[str]:
    """`gc --damaged -f` for a pod: its pins and directories go with its damaged records; what it held on
    the network (address, veth), now owned by no record, goes with the reconcile that follows."""
    removed = []
    for target in [paths.netns_pin(name), *(os.path.join(paths.pod_pin_dir(name), ns) for ns in SHAREABLE)]:
        if os.path.lexists(target):
            unpin(target)
            removed.append(f"pin {target}")
    with contextlib.suppress(OSError):
        os.rmdir(paths.pod_pin_dir(name))
    from minirun.runtime.container import config

    if config.remove_pod_etc(name):
        removed.append(f"directory of pod {name}")
    for entry in sorted(os.listdir(paths.pods_dir())):
        if entry.startswith(f"{name}{store.DAMAGED_MARK}"):
            jsonstore.remove_file(os.path.join(paths.pods_dir(), entry))
            removed.append(f"damaged record {entry}")
    return removed


def pin_step(pod: dict[str, Any], ns: str, holder: dict[str, Any]) -> Step:
    """Bind-mount the holder's namespace `ns` on its pin path (`ip netns add` does this for net)."""
    target = paths.netns_pin(pod["name"]) if ns == "net" else os.path.join(paths.pod_pin_dir(pod["name"]), ns)

    def apply():
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        os.close(fd)
        try:
            k.mount(f"/proc/{holder['pid']}/ns/{ns}", target, None, k.MS_BIND)
        except OSError:
            os.unlink(target)
            raise
        pod["pins"][ns] = target

        def undo() -> None:
            unpin(target)
            if ns != "net":  # the pod's own pin directory, made for it (a failed create left it behind)
                with contextlib.suppress(OSError):  # another pin still in it
                    os.rmdir(os.path.dirname(target))

        return undo

    def explain() -> list[str]:
        pid = holder.get("pid", "<pid>")
        lines = [f"touch {target}", f"mount --bind /proc/{pid}/ns/{ns} {target}"]
        if ns == "net":
            lines[-1] += f"   # what `ip netns attach {os.path.basename(target)} {pid}` does"
        return lines

    return Step(f"pin-{ns}", apply, explain)


def unpin(target: str) -> None:
    """Unmount and remove a pin; one that is already gone is fine."""
    with contextlib.suppress(OSError):
        k.umount2(target, k.MNT_DETACH)
    jsonstore.remove_file(target)


def release(pod: dict[str, Any], narrator: Narrator | None = None) -> list[str]:
    """Stop the pod's init, unpin the namespaces (the kernel then deletes the veth with the netns), release
    the address, forget the record. Every step runs even if another failed."""
    removed: list[str] = []
    detach = {step.name: step for step in _detach_steps(pod, removed)}
    init = [_stop_init_step(pod, removed)] if pod.get("infra") else []
    ports = [detach.pop("ports")] if "ports" in detach else []
    # Pins before the veth: unpinning drops the netns's last reference and the kernel deletes the veth with
    # it; checked the other way round, the veth step waits its whole grace period for a veth still held.
    steps = [*init, *ports, _unpin_step(pod), *detach.values(), _forget_step(pod, removed)]
    run_best_effort(steps, f"removal of pod {pod['name']} was incomplete", narrator)
    return removed


def _detach_steps(pod: dict[str, Any], removed: list[str]) -> list[Step]:
    """plan_detach's steps in the pod's order: [ports,] veth, address; with the pod's own explain texts."""
    from minirun.net import attachment
    from minirun.net.network import from_attachment

    network = pod.get("network") or {}
    veth = network.get("host_veth") or attachment.host_veth_name(pod["id"])
    address = (network.get("address") or "").split("/")[0]
    pool = attachment.AddressStore(paths.ipam_dir(network.get("name", "minirun")))
    detach = attachment.Detach(
        from_attachment(network),  # None: the ports go without releasing 127/8 routing
        pod["id"],
        addresses=(address,) if address else (),
        port_owner=pod["id"] if pod.get("ports") else None,
        host_veth=veth,
    )

    def veth_gone(ipr: attachment.Rtnl, name: str) -> bool:
        with ipr:
            return teardown.remove_lingering_link(ipr, name)

    firewall = attachment.select_driver("nft" if detach.port_owner else "none")  # see container/teardown.py
    steps = attachment.plan_detach(detach, pool, firewall, attachment.open_host, removed, veth_gone)
    # A pod interrupted before its record named an address holds none by record: its address step does
    # nothing and tells nothing (reconcile releases an address no record names).
    steps.setdefault("address", Step("address", lambda: None, list))
    tag = attachment.port_owner_tag(pod["id"])
    told = {  # what `pod rm --explain` has always said
        "ports": [f'nft delete rule ... # the rules tagged "{tag}"'],
        "veth": [f"# {veth} goes with the last reference to the netns; if it lingers: ip link delete {veth}"],
        "address": [f"rm {pool.directory}/{address}"] if address else [],
    }
    return [
        steps[name]._replace(explain=lambda lines=told[name]: lines)
        for name in ("ports", "veth", "address")
        if name in steps
    ]


def _stop_init_step(pod: dict[str, Any], removed: list[str]) -> Step:
    infra = pod["infra"]

    def stop_init() -> None:
        if proc.is_alive(infra["pid"], infra.get("started")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(infra["pid"], signal.SIGKILL)  # its PID namespace, and every member in it, goes too
            removed.append(f"pod init {infra['pid']}")

    return Step("init", stop_init, lambda: [f"kill -KILL {infra.get('pid')}   # the pod's PID 1 (tini)"])


def _unpin_step(pod: dict[str, Any]) -> Step:
    name = pod["name"]
    pins = sorted({*pod.get("pins", {}).values(), *(os.path.join(paths.pod_pin_dir(name), ns) for ns in SHAREABLE)})
    if "net" in pod.get("pins", {}) or pod.get("status") == PodStatus.CREATING:
        pins.append(paths.netns_pin(name))
    pinned = sorted(pod.get("pins", {}).values())

    def unpin_all() -> None:
        for target in pins:
            unpin(target)
        with contextlib.suppress(OSError):
            os.rmdir(paths.pod_pin_dir(name))

    return Step(
        "pins",
        unpin_all,
        lambda: [
            *(f"umount {p} && rm {p}" for p in pinned),
            f"# for the net pin that is what `ip netns delete {paths.NETNS_PREFIX}{name}` does",
        ],
    )


def _forget_step(pod: dict[str, Any], removed: list[str]) -> Step:
    name = pod["name"]

    def forget() -> None:
        from minirun.runtime.container import config

        config.remove_pod_etc(name)
        store.remove_pod(name)
        removed.append(f"pod {name}")

    return Step("record", forget, lambda: [f"rm -r {paths.pod_record(name)} {paths.pod_data_dir(name)}"])
