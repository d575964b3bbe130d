"""Pods: a set of namespaces (net, uts, ipc) made once, attached to the bridge once, and joined by members.

The namespaces are pinned the way `ip netns add` pins them - an nsfs file bind-mounted on a path - rather
than by an infra ("pause") process as Kubernetes does: a pin costs no process and no memory, and the net
pin at /run/netns/minirun-POD makes the pod an ordinary named netns for `ip netns list` and
`ip netns exec`. So a pod outlives its members with nothing running, until `pod rm`.

Creating: a short-lived helper process unshares the namespaces, sets the hostname (the pod's name) and
hands the launcher a netlink socket inside the new netns; the launcher pins the namespaces, lets the helper
exit, and runs the very same network plan as a container (veth, address, route, NAT). A member only
setns(2)s into the pins: no netlink, no pyroute2 on that path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from typing import Any, NamedTuple

from minirun import filelock, paths
from minirun.errors import ConfigError, MinirunError
from minirun.kernel import nsfork, proc
from minirun.kernel import syscalls as k
from minirun.plan import Narrator, Step
from minirun.runtime import model, network_plan, pod_teardown, store
from minirun.runtime.container import control, teardown
from minirun.runtime.model import PodStatus
from minirun.runtime.phases import describe_phases, run_phases
from minirun.runtime.pod_teardown import DEFAULT_SHARE, SHAREABLE
from minirun.spec import validate_pod_name as validate_name


def parse_share(text: str) -> tuple[str, ...]:
    """`--share net,uts,ipc[,pid]`: net always (it is what a pod is)."""
    items = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [item for item in items if item not in SHAREABLE]
    if unknown or "net" not in items:
        raise ConfigError(
            f'invalid --share "{text}"',
            hint=f"list namespaces from {','.join(SHAREABLE)}; net is always shared (it is what a pod is)",
        )
    return items


def join_paths(pod: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    """The pins a member setns()es into itself, net first (a shared PID namespace is joined by the launcher)."""
    return tuple((pod["pins"][ns], SHAREABLE[ns]) for ns in DEFAULT_SHARE if ns in pod["pins"])


def pid_namespace(pod: dict[str, Any]) -> str | None:
    """The pod's PID namespace, when shared; its PID 1 (tini) must still run for anyone to join."""
    if "pid" not in pod.get("pins", {}):
        return None
    infra = pod.get("infra") or {}
    if not proc.is_alive(infra.get("pid", 0), infra.get("started")):
        raise MinirunError(
            f"the PID 1 of pod {pod['name']} is gone, so nothing can join its PID namespace",
            hint=f"recreate the pod: minirun pod rm -f {pod['name']}",
        )
    return pod["pins"]["pid"]


def ensure(name: str, *, quiet: bool = False) -> dict[str, Any]:
    """The pod `name`, created on first use. Two concurrent callers create exactly one pod."""
    existing = store.load_pod(name)
    if existing is not None and model.is_ready(existing):
        return existing
    with filelock.exclusive(paths.pods_lock()):
        existing = store.load_pod(name)
        if existing is not None and model.is_ready(existing):
            return existing
        pod = _create_locked(name, DEFAULT_SHARE, None)
    if not quiet:
        announce(pod)
    return pod


def announce(pod: dict[str, Any]) -> None:
    import sys

    print(f"minirun: created pod {pod['name']} ({pod['network']['address']})", file=sys.stderr)


def create(
    name: str,
    share: tuple[str, ...] = DEFAULT_SHARE,
    hostname: str | None = None,
    narrator: Narrator | None = None,
    dry_run: bool = False,
    ports: tuple = (),
    network: str = "bridge",
) -> dict[str, Any] | None:
    """`pod create`: a pod that already exists is a conflict. With dry_run: describe, change nothing."""
    if dry_run:
        if store.load_pod(name) is not None:
            raise MinirunError(f'pod "{name}" already exists', code=1)
        return _create_locked(name, share, hostname, narrator, dry_run, ports, network)
    with filelock.exclusive(paths.pods_lock()):
        if store.load_pod(name) is not None:
            raise MinirunError(f'pod "{name}" already exists', hint=f"remove it first: minirun pod rm {name}", code=1)
        return _create_locked(name, share, hostname, narrator, dry_run, ports, network)


def _create_locked(
    name: str,
    share: tuple[str, ...],
    hostname: str | None,
    narrator: Narrator | None = None,
    dry_run: bool = False,
    ports: tuple = (),
    network_name: str = "bridge",
) -> dict[str, Any] | None:
    from minirun.net import network as netdefs

    validate_name(name)
    network = netdefs.resolve(network_name)
    host = network_plan.validate_bridge(network)
    if ports:
        from minirun.net.ports import check_free

        check_free(ports, store.published_ports())
    pod = _new_record(name, share, hostname, ports)
    pod_id = pod["id"]
    holder: dict[str, Any] = {}
    netns = network_plan.NetnsHandle(paths.netns_pin(name))  # the net pin: the attach moves the veth there
    attachment = network_plan.bridge_attachment(network, pod_id)
    published = lambda: store.published_ports(exclude=pod_id)  # noqa: E731
    # The one plan: namespaces and pins, then the attach, planned once the namespaces step filled `netns`.
    phases = [
        lambda: [
            _namespaces_step(pod, share, holder, netns),
            *(pod_teardown.pin_step(pod, ns, holder) for ns in share),
        ],
        lambda: network_plan.bridge_steps(attachment, host, netns, pod_id, ports, published),
    ]
    if dry_run:
        describe_phases(phases, narrator)
        return None
    with contextlib.ExitStack() as undo:
        store.save_pod(pod)
        undo.callback(store.remove_pod, name)
        run_phases(phases, undo, narrator=narrator)
        helper = holder["pid"]
        model.move_pod(pod, PodStatus.READY, network=attachment.as_record())
        pod.pop("owner")
        if "pid" in share:
            pod["infra"] = {"pid": helper, "started": proc.start_time(helper)}
        store.save_pod(pod)
        undo.pop_all()
    netns.close()
    holder["netlink"].close()
    if "pid" in share:
        _HELPER_SOCKETS.pop(helper).send(b"g")  # the helper becomes the pod's init and stays
    else:
        _reap(helper)
    return pod


def _new_record(name: str, share: tuple[str, ...], hostname: str | None, ports: tuple) -> dict[str, Any]:
    """The pod's record as it is first written (status creating, with its creator as owner)."""
    return {
        "id": model.new_container_id(),
        "name": name,
        "hostname": hostname or name,
        "share": list(share),
        "created": store.now_iso(),
        "status": PodStatus.CREATING,
        "owner": model.owner_identity(),
        "pins": {},
        "ports": [list(mapping) for mapping in ports],
    }


def _namespaces_step(
    pod: dict[str, Any], share: tuple[str, ...], holder: dict[str, Any], netns: network_plan.NetnsHandle
) -> Step:
    """Spawn the helper that holds the new namespaces; it fills in `holder` (pid, netlink) and `netns`."""

    def spawn() -> object:
        holder["pid"], holder["netlink"] = _spawn_namespace_holder(share, pod["hostname"])
        netns.fill(netns.label, holder["netlink"])

        def undo_spawn() -> None:
            netns.close()
            holder["netlink"].close()
            _reap(holder["pid"])

        return undo_spawn

    def explain_spawn() -> list[str]:
        flags = " ".join(f"--{ns}" for ns in share if ns != "pid")
        pid_part = "--pid --fork " if "pid" in share else ""
        lines = [
            f"unshare {pid_part}{flags} sleep infinity &   # holds the namespaces until they are pinned: "
            f"PID {holder.get('pid', '<pid>')}"
        ]
        if "uts" in share:
            lines.append(f"nsenter --uts=/proc/{holder.get('pid', '<pid>')}/ns/uts hostname {pod['hostname']}")
        return lines

    return Step("namespaces", spawn, explain_spawn)


def _spawn_namespace_holder(share: tuple[str, ...], hostname: str) -> tuple[int, socket.socket]:
    """A child in fresh namespaces that sends back a netlink socket from inside, then waits to be let go.

    With a shared PID namespace the child is that namespace's PID 1 and, once let go, stays as the pod's
    init: tini, which reaps the members' orphans (a PID namespace whose PID 1 is gone takes no one new).
    """
    from minirun.runtime.container.child import reset_signals

    init = _confined_init() if "pid" in share else None
    parent_end, child_end = nsfork.socket_channel()
    pid = nsfork.fork_into_new_pid_namespace() if init else os.fork()
    if pid == 0:
        code = 1
        try:
            parent_end.close()
            k.set_parent_death_signal(signal.SIGKILL)  # until let go: a creator killed mid-way takes us along
            flags = k.CLONE_NEWNS if init else 0  # the init's own mount namespace, see _confined_init
            for ns in share:
                flags |= SHAREABLE[ns] if ns != "pid" else 0
            nsfork.enter_new_namespaces(flags)
            if "uts" in share:
                k.sethostname(hostname)
            with contextlib.suppress(OSError), open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
                f.write("1")
            netlink = nsfork.netlink_route_socket()
            if init:
                # Before the netlink socket goes back: a failure here is the creator's failure to report.
                devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                init.enter_root_and_confine()
            nsfork.send_socket(child_end, netlink)
            netlink.close()
            go = child_end.recv(1)  # b"g" once the pod is complete; b"" when the launcher gave up
            if init and go == b"g":
                k.set_parent_death_signal(0)
                reset_signals()
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.closerange(3, 65536)
                os.execv("/tini", ["/tini", "--", "/busybox", "sleep", "infinity"])
            code = 0
        finally:
            os._exit(code)
    child_end.close()
    netlink = nsfork.receive_socket(parent_end)
    if netlink is None:
        _reap(pid)
        raise MinirunError("could not create the pod's namespaces (the helper process failed)")
    # Keep parent_end open until the pod is complete: closing it is what lets the helper go.
    _HELPER_SOCKETS[pid] = parent_end
    return pid, netlink


_HELPER_SOCKETS: dict[int, socket.socket] = {}

# The pod's init is tini with a busybox `sleep` as its one child; both static, so that a root holding just
# the two files is enough to run them.
INIT_STATIC_CANDIDATES = ("/usr/bin/tini-static", "/usr/bin/docker-init")
BUSYBOX_STATIC_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


class _ConfinedInit(NamedTuple):
    """A pod's PID 1, confined like a member: members that may ptrace (--cap-add SYS_PTRACE) reach
    its root, cwd and memory through /proc/1, so it must hold nothing of the host. It gets a mount
    namespace whose root is a read-only tmpfs with only the two static binaries it runs, Docker's
    default capabilities, no_new_privs and the default seccomp filter."""

    tini: str
    busybox: str
    security: object  # minirun.security.SecurityProfile

    def enter_root_and_confine(self) -> None:
        """Runs in the namespace holder, in its new mount namespace, before it hands back its netlink
        socket; then it only waits for the pod to be complete and execs /tini."""
        from minirun.fs import rootfs
        from minirun.security import confine, prepare

        prepared = prepare(self.security)  # libseccomp is loaded from the host's /usr/lib: before the root goes
        k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
        rootfs.enter_minimal_root({"tini": self.tini, "busybox": self.busybox})
        confine(self.security, (0, 0, ()), prepared)


def _confined_init() -> _ConfinedInit:
    from minirun.security import default_profile, preload

    tini = next((path for path in INIT_STATIC_CANDIDATES if _is_static_executable(path)), None)
    busybox = next((path for path in BUSYBOX_STATIC_CANDIDATES if _is_static_executable(path)), None)
    if tini is None or busybox is None:
        raise MinirunError(
            "--share pid needs statically linked tini and busybox for the pod's init (its root holds only those): "
            f"none of {', '.join(INIT_STATIC_CANDIDATES + BUSYBOX_STATIC_CANDIDATES)} is one",
            hint="apt-get install tini busybox-static",
        )
    profile = default_profile()
    preload(profile)
    return _ConfinedInit(tini, busybox, profile)


def _is_static_executable(path: str) -> bool:
    """A 64-bit little-endian ELF file (the architectures minirun runs on) with no PT_INTERP program
    header: it needs no dynamic loader, so it runs in a root that holds nothing else."""
    import struct

    try:
        with open(path, "rb") as f:
            header = f.read(64)
            if not os.access(path, os.X_OK) or header[:5] != b"\x7fELF\x02":  # 64-bit ELF
                return False
            (phoff,) = struct.unpack_from("<Q", header, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    pt_interp = 3
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def _reap(pid: int) -> None:
    sock = _HELPER_SOCKETS.pop(pid, None)
    if sock is not None:
        sock.close()
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def remove(name: str, force: bool, narrator: Narrator | None = None) -> list[str]:
    """`pod rm`: refuses while members run unless force (then kills them); releases everything."""
    pod = store.load_pod(name)
    if pod is None:
        raise store._pod_not_found(name)
    running = [m for m in store.pod_members(name) if model.is_running(m)]
    if running and not force:
        raise MinirunError(
            f"pod {name} has {len(running)} running member(s)", hint=f"stop them, or use pod rm -f {name}", code=1
        )
    for member in running:
        teardown.kill(member)
        control.wait_exited(member, timeout=5)
    for member in store.pod_members(name):
        member = store.load(member["id"]) or member
        member["auto_remove"] = True
        teardown.teardown(member, narrator=narrator)
    return pod_teardown.release(pod, narrator)


def stop(name: str, timeout: float) -> None:
    store.find_pod(name)
    for member in store.pod_members(name):
        control.stop(member, timeout)
