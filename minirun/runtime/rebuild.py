"""A new record for a container that still runs after its record was damaged (issue 13, item 2).

reconcile sets a damaged record aside (ID.json.damaged-TIMESTAMP), and its id keeps holding what the
container may own. When the container provably still runs, `attempt` writes a new record from what the
kernel and minirun's own files show, so that `ps`, `inspect`, `logs`, `exec`, `stop` and `rm` work on it
again and what it holds is released the normal way when it goes. The damaged file stays, for forensics,
until `minirun gc --damaged -f`.

Evidence is only what a container cannot forge. Its processes may rewrite their command line, environment
and hostname and most files they see: none of that is read. What is read:
- minirun's own files, out of every container's reach: the name claim and the address reservation (both
  name the id), the log file and the directory the container has on the data root;
- kernel facts: the host veth whose name derives from the id, the bridge it is on and the network
  namespace its peer is in (IFLA_LINK_NETNSID, against RTM_GETNSID of /proc/PID/ns/net); which processes
  are PID 1 of a PID namespace one level below ours (NSpid: a container's first process, and only that
  one in its namespace); a process's parent, and who holds the supervisor's lock (/proc/locks); the device
  and inode of the container's own /tmp or /etc/hostname (bind mounts of its directory, which only minirun
  makes), reached through /proc/PID/root without following any link.

A bridged container's PID 1 is the one in the network namespace of its veth, on the bridge of the network
its address is reserved on. Any other container's PID 1 is the one that sees the id's own directory at
its /tmp or /etc/hostname. No such process (the container is dead), several, a veth and an address that
disagree, a process another record names: no rebuild, and everything stays reserved as before. A
--privileged container can mount what it likes, but it is root on the host anyway (as under Docker).

What nothing outside the container tells (its command, environment, security profile, --rm...) is left out
of the record and listed under "unknown": never guessed. Its published ports are the DNAT rules tagged
with its id in minirun's nft table.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Any, NamedTuple

from minirun import filelock, paths
from minirun.errors import MinirunError
from minirun.kernel import proc
from minirun.net import network as netdefs
from minirun.net import survey
from minirun.net.attachment import Rtnl, host_veth_name, open_host, select_driver
from minirun.runtime import model, store
from minirun.runtime.container import config

# What `run` records and no evidence outside the container tells.
ALWAYS_UNKNOWN = (
    "command",
    "created",
    "env",
    "etc_dir",
    "hostname",
    "init",
    "security",
    "tty",
    "user",
    "user_spec",
    "workdir",
)
# Where a container sees its own directory (bind mounts minirun makes): without an image its private
# writable dirs (rootfs.HOST_MODE_WRITABLE), and its /etc/hostname unless it shares its pod's.
_OWN_MOUNTS = (("tmp", "host/tmp"), ("var/tmp", "host/var-tmp"), ("run", "host/run"), ("etc/hostname", "etc/hostname"))


class Outcome(NamedTuple):
    record: dict[str, Any] | None  # the new record; None: not rebuilt
    reason: str  # what it was rebuilt from, or why not


class Refused(Exception):
    """The evidence does not prove which running process is the container: nothing is rebuilt."""


def attempt(container_id: str) -> Outcome:
    """Rebuild the record of `container_id`, whose damaged record was set aside, if its container runs.

    Under paths.damaged_lock(), which `gc --damaged -f` holds while it releases what a damaged record held:
    a record is never rebuilt for what is being released, nor released while it is rebuilt."""
    try:
        with filelock.exclusive(paths.damaged_lock()):
            record = _rebuild(container_id)
    except Refused as exc:
        return Outcome(None, str(exc))
    except (MinirunError, OSError) as exc:  # a sick host: the record stays set aside, as without a rebuild
        return Outcome(None, f"the evidence could not be read or the record written: {exc}")
    what = [f"PID {record['pid']}"]
    what += [f"name {record['name']}"] if record.get("name") else []
    what += [f"address {record['network']['address'].split('/')[0]}"] if record.get("network") else []
    what += [f"pod {record['pod']}"] if record.get("pod") else []
    return Outcome(record, ", ".join(what))


def _rebuild(container_id: str) -> dict[str, Any]:
    if store.has_record(container_id):
        raise Refused("it has a record again")
    damaged = store.damaged_records().get(container_id)
    if not damaged:
        raise Refused("its damaged record was released")
    others = [r for r in store.all_records() if not r.get("corrupt")]
    all_pods = store.all_pods()
    names, addresses = _claims(container_id)
    record: dict[str, Any] = {"id": container_id}
    unknown = list(ALWAYS_UNKNOWN)
    pid = _find_pid(record, addresses, others, all_pods, unknown)
    started = _check_pid(pid, others, all_pods)
    record.update(
        status=model.ContainerStatus.RUNNING,
        pid=pid,
        pid_started=started,
        started=_iso(proc.started_at(started)),
        **_owner(pid, container_id, unknown),
    )
    if names:
        record["name"] = names[0]
    else:
        unknown.append("name")
    image = _image(pid, container_id)
    if image is not None:
        record["image"] = image
        unknown.append("read_only")
    else:
        unknown.append("image")
    record.update(rebuilt=True, rebuilt_from=damaged[-1], rebuilt_at=store.now_iso(), unknown=sorted(unknown))
    _write(record, pid, started)
    return record


def _claims(container_id: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The names claimed and the (network, address) reserved for the id: at most one of each."""
    names = sorted(name for name, owner in store.name_claims().items() if owner == container_id)
    if len(names) > 1:
        raise Refused(f"several names are claimed for it ({', '.join(names)})")
    # each reservation file names its owner
    addresses = survey.reservations_of(paths.ipam_root(), container_id)
    if len(addresses) > 1:
        raise Refused(f"several addresses are reserved for it ({', '.join(a for _, a in addresses)})")
    return names, addresses


def _find_pid(
    record: dict[str, Any],
    addresses: list[tuple[str, str]],
    others: list[dict],
    all_pods: list[dict],
    unknown: list[str],
) -> int:
    """The container's PID 1, from its veth and reservation when it has them, else from its own directory;
    fills in the network part of `record`."""
    container_id = record["id"]
    with open_host() as ipr:
        if addresses or survey.link_named(ipr, host_veth_name(container_id)) is not None:
            pid, record["network"] = _bridged(ipr, container_id, addresses, others, all_pods)
            record["network_mode"], record["pod"] = "bridge", None
            record["ports"] = _published(container_id, addresses[0][1], unknown)
            return pid
    pid = _only(
        [p for p in proc.namespace_inits() if _sees_own_directory(p, container_id)],
        "with the container's own directory at its /tmp or /etc/hostname",
    )
    record["network_mode"], record["pod"] = _network_mode(pid, all_pods)
    return pid


def _check_pid(pid: int, others: list[dict], all_pods: list[dict]) -> int:
    """The start time of `pid`, which must run and be named by no other record."""
    started = proc.start_time(pid)
    if started is None or not proc.is_alive(pid, started):
        raise Refused(f"its PID 1 ({pid}) ended")
    claimed = {(r.get("pid"), r.get("pid_started")): r["id"] for r in others if model.is_live(r)}
    claimed |= {((p.get("infra") or {}).get("pid"), (p.get("infra") or {}).get("started")): p["id"] for p in all_pods}
    if (pid, started) in claimed:
        raise Refused(f"its PID 1 ({pid}) is named by the record of {claimed[pid, started]}")
    return started


def _write(record: dict[str, Any], pid: int, started: int) -> None:
    container_id = record["id"]
    if not store.create(record):
        raise Refused("a record appeared meanwhile")
    # Ended while we wrote: its supervisor may have reaped it before there was a record to find. With no live
    # owner in the record, the next command's reconcile tears it down, as when the supervisor dies.
    ended = not proc.is_alive(pid, started) and record.get("owner") and record["detached"]
    if ended and store.load(container_id) == record:
        store.save({**record, "owner": None})


def _bridged(
    ipr: Rtnl, container_id: str, addresses: list[tuple[str, str]], others: list[dict], all_pods: list[dict]
) -> tuple[int, dict[str, Any]]:
    """The PID 1 of a bridged container and its attachment record, from its veth and its reservation."""
    veth_name = host_veth_name(container_id)
    veth = survey.link_named(ipr, veth_name)
    if veth is None:
        raise Refused(f"its veth {veth_name} is gone: the container is not running")
    if not addresses:
        raise Refused(f"its veth {veth_name} is there, but no address is reserved for it")
    if veth.kind != "veth":
        raise Refused(f"{veth_name} is a {veth.kind or 'plain'} link, not a veth")
    network_name, address = addresses[0]
    network = next((n for n in netdefs.all_networks() if n.name == network_name), None)
    if network is None or ipaddress.IPv4Address(address) not in network.subnet:
        raise Refused(f"its address {address} is on network {network_name}, which has no record that holds it")
    bridge = survey.link_named(ipr, network.bridge)
    if bridge is None or veth.master != bridge.index:
        raise Refused(f"its veth {veth_name} is not on {network.bridge}, the bridge of network {network_name}")
    for owner in [*others, *all_pods]:
        if (owner.get("network") or {}).get("host_veth") == veth_name or host_veth_name(owner["id"]) == veth_name:
            raise Refused(f"its veth {veth_name} is named by the record of {owner['id']}")
    nsid = survey.peer_namespace_id(ipr, veth_name)
    if nsid is None:
        raise Refused(f"the peer of its veth {veth_name} is in no other network namespace")
    pid = _only(
        [p for p in proc.namespace_inits() if survey.namespace_id(ipr, f"/proc/{p}/ns/net") == nsid],
        f"in the network namespace of its veth {veth_name}",
    )
    attachment = {
        "name": network.name,
        "bridge": network.bridge,
        "address": f"{address}/{network.subnet.prefixlen}",
        "gateway": str(network.gateway),
        "host_veth": veth_name,
        "mtu": veth.mtu,
    }
    return pid, attachment


def _published(container_id: str, address: str, unknown: list[str]) -> list[list]:
    """The ports published to the container: the DNAT rules tagged with its id in minirun's nft table."""
    try:
        return [list(mapping) for mapping in select_driver().published_by(container_id, address)]
    except MinirunError:  # nft missing or failing: not known (teardown still removes whatever is tagged)
        unknown.append("ports")
        return []


def _only(pids: list[int], where: str) -> int:
    if not pids:
        raise Refused(f"no container's PID 1 runs {where} (it ended, or left)")
    if len(pids) > 1:
        raise Refused(f"several containers' PID 1s run {where} ({', '.join(map(str, pids))})")
    return pids[0]


def _sees_own_directory(pid: int, container_id: str) -> bool:
    """Whether the process sees a file of the id's own directory (same device and inode) where minirun
    bind-mounts it into that container's view."""
    directory = config.container_dir(container_id)
    for inside, source in _OWN_MOUNTS:
        try:
            expected = os.stat(os.path.join(directory, source), follow_symlinks=False)
        except OSError:
            continue
        seen = _stat_within_root(pid, inside)
        if seen is not None and (seen.st_dev, seen.st_ino) == (expected.st_dev, expected.st_ino):
            return True
    return False


def _stat_within_root(pid: int, relative: str) -> os.stat_result | None:
    """Stat `relative` in the process's view, one component at a time and never through a link: a link the
    container made (absolute or not) would otherwise lead the walk into the host's tree."""
    try:
        fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for part in relative.split("/"):
            try:
                next_fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                return None
            os.close(fd)
            fd = next_fd
        return os.fstat(fd)
    finally:
        os.close(fd)


def _network_mode(pid: int, all_pods: list[dict]) -> tuple[str, str | None]:
    """("pod", NAME) for a member of a pod (in its pinned netns), else "host" (ours) or "none" (its own)."""
    netns = proc.namespace_of(pid, "net")
    for pod in all_pods:
        try:
            pin = os.stat(paths.netns_pin(pod["name"]))
        except OSError:
            continue
        if (pin.st_dev, pin.st_ino) == netns:
            return "pod", pod["name"]
    return ("host" if netns == proc.namespace_of("self", "net") else "none"), None


def _owner(pid: int, container_id: str, unknown: list[str]) -> dict[str, Any]:
    """Who watches it. The supervisor of this state root (the holder of its lock) is the parent of every
    detached container's PID 1; a container with a log file and another parent lost its supervisor (it has
    no owner then, as reconcile expects); a foreground one's parent is its `minirun run`, which keeps its
    own copy of the record and tears everything down when the container ends."""
    parent = proc.parent(pid)
    if parent in proc.flock_holders(paths.supervisor_lock()):
        unknown += ["auto_remove", "log_config"]
        return {"owner": _identity(parent), "detached": True, "auto_remove": False, "log": _log(container_id)}
    if os.path.isfile(paths.container_log(container_id)):
        unknown += ["auto_remove", "log_config"]
        return {"owner": None, "detached": True, "auto_remove": False, "log": _log(container_id)}
    if not parent or parent == 1:
        raise Refused(f"its PID 1 ({pid}) has no launcher and no log: neither a foreground nor a detached run")
    return {"owner": _identity(parent), "detached": False, "auto_remove": True, "log": None}


def _identity(pid: int) -> dict[str, int | None]:
    return {"pid": pid, "started": proc.start_time(pid)}


def _log(container_id: str) -> str | None:
    path = paths.container_log(container_id)
    return path if os.path.isfile(path) else None


def _image(pid: int, container_id: str) -> dict[str, Any] | None:
    """The image under the container's overlay root, so the image is not deleted while it runs: the root
    mount of PID 1 whose upper dir is the id's own (mounted by minirun before the container ran)."""
    upper = os.path.join(config.container_dir(container_id), "upper")
    by_id = os.path.join(paths.images_dir(), "by-id")
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3 or fields[4] != "/" or tail[0] != "overlay":
            continue
        options = dict(item.partition("=")[::2] for item in tail[2].split(","))
        lower = options.get("lowerdir", "")
        if options.get("upperdir") == upper and os.path.dirname(os.path.dirname(lower)) == by_id:
            image_id = os.path.basename(os.path.dirname(lower))
            from minirun.fs import images

            tags = images.names_of(image_id)
            return {"id": image_id, "name": tags[0] if tags else None}
    return None


def _iso(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
