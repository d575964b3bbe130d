"""What `ps`, `inspect`, `logs`, `port`, `pod ls` and `pod inspect` show, as data (the CLI renders it), and
finding a container by the reference a user gives."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from typing import Any

from minirun.errors import MinirunError, NotFound
from minirun.net.ports import PortMapping
from minirun.runtime import model, reconcile, store
from minirun.runtime.model import ContainerStatus


def find(ref: str) -> dict[str, Any]:
    """A container by full id, name, or a unique id prefix (Docker's rules). Raises NotFound (exit 1)."""
    records = store.all_records()
    if any(r.get("corrupt") for r in records):
        # Damaged since the last full reconcile (which a command skips while no minirun process has died,
        # runtime/owners.py): set it aside, rebuilt when its container runs, before looking it up.
        reconcile.reconcile(full=True)
        records = store.all_records()
    for record in records:
        if ref in (record["id"], record.get("name")):
            return record
    matches = [r for r in records if r["id"].startswith(ref)] if ref else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        ids = ", ".join(sorted(r["id"] for r in matches))
        raise MinirunError(f'"{ref}" matches several containers ({ids})', hint="give more of the id", code=1)
    named = store.read_name(ref) if ref and "/" not in ref else None
    damaged = [i for i in store.damaged_records() if ref and (i.startswith(ref) or i == named)]
    if damaged:
        raise NotFound(
            f"no such container: {ref} (the record of container {damaged[0]} is damaged)",
            hint="see what it holds with 'minirun gc --damaged', release it with 'minirun gc --damaged -f'",
        )
    raise NotFound(f"no such container: {ref}", hint="see 'minirun ps -a'")


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def human_duration(seconds: float) -> str:
    """Docker's wording (go-units HumanDuration): 'Less than a second', '3 seconds', 'About a minute'…"""
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def seconds_since(text: str | None, now: datetime.datetime) -> float:
    when = _parse_time(text)
    return (now - when).total_seconds() if when else 0.0


def status_text(record: dict[str, Any], now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    status = record.get("status")
    if status in (ContainerStatus.CREATED, ContainerStatus.CREATING):
        return "Created"
    if status == ContainerStatus.RUNNING and not model.container_alive(record):
        return "Exited (unknown)"  # its PID 1 ended (a zombie too) and its owner has not recorded how yet
    if status == ContainerStatus.RUNNING:
        return f"Up {human_duration(seconds_since(record.get('started'), now))}"
    code = record.get("exit_code", model.EXIT_STATUS_LOST)
    return f"Exited ({code}) {human_duration(seconds_since(record.get('finished'), now))} ago"


def ps_rows(show_all: bool) -> list[dict[str, Any]]:
    now = datetime.datetime.now(datetime.UTC)
    rows = []
    records = sorted(store.all_records(), key=lambda r: r.get("created", ""), reverse=True)
    for record in records:
        if not show_all and not model.is_running(record):
            continue
        network = record.get("network") or _pod_network(record)
        rows.append(
            {
                "ID": record["id"],
                "Names": record.get("name", ""),
                "Image": image_label(record),
                "Command": " ".join(record.get("command", [])).replace("\n", " "),
                "CreatedAt": record.get("created", ""),
                "RunningFor": (
                    f"{human_duration(seconds_since(record['created'], now))} ago" if record.get("created") else ""
                ),
                "Status": status_text(record, now),
                "State": record.get("status", ""),
                "Pod": record.get("pod") or "",
                "Ports": ", ".join(str(PortMapping(*m)) for m in ports_of(record)),
                # Released at exit: an exited container has no address (Docker shows none either).
                "IP": (network.get("address") or "").split("/")[0]
                if record.get("status") == ContainerStatus.RUNNING
                else "-",
            }
        )
    return rows


def ports_of(record: dict[str, Any]) -> list:
    """A container's published ports, or its pod's for a member (they are the member's too)."""
    if record.get("pod"):
        return (store.load_pod(record["pod"]) or {}).get("ports") or []
    return record.get("ports") or []


def docker_ports(mappings: list) -> dict[str, list[dict[str, str]]]:
    """NetworkSettings.Ports in Docker's shape: {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}."""
    shaped: dict[str, list[dict[str, str]]] = {}
    for mapping in (PortMapping(*m) for m in mappings):
        shaped.setdefault(f"{mapping.container_port}/{mapping.proto}", []).append(
            {"HostIp": mapping.host_ip, "HostPort": str(mapping.host_port)}
        )
    return shaped


def _pod_network(record: dict[str, Any]) -> dict[str, Any]:
    """A pod member shows its pod's address: it is the member's too."""
    if not record.get("pod"):
        return {}

    return (store.load_pod(record["pod"]) or {}).get("network") or {}


def inspect(record: dict[str, Any]) -> dict[str, Any]:
    """Docker's `inspect` shape, where the meaning is the same."""
    network = record.get("network") or _pod_network(record)
    running = model.is_running(record)
    pid = record.get("pid") if running else 0
    return {
        "Id": record["id"],
        "Name": "/" + record.get("name", ""),
        "Created": record.get("created"),
        "Path": (record.get("command") or [""])[0],
        "Args": (record.get("command") or [])[1:],
        "State": {
            "Status": "running"
            if running
            else {ContainerStatus.CREATING: "created", ContainerStatus.CREATED: "created"}.get(
                record.get("status"), "exited"
            ),
            "Running": running,
            "Pid": pid or 0,
            "ExitCode": 0 if running else record.get("exit_code", 0),
            "StartedAt": record.get("started") or "0001-01-01T00:00:00Z",
            "FinishedAt": record.get("finished") or "0001-01-01T00:00:00Z",
        },
        "Config": {
            "Hostname": record.get("hostname"),
            "Env": record.get("env", []),
            "Cmd": record.get("command", []),
            "WorkingDir": record.get("workdir") or "",
            "Tty": bool(record.get("tty")),
            "Image": image_label(record, default=""),
            "User": record.get("user_spec") or "",
        },
        "Image": f"sha256:{record['image']['id']}" if record.get("image") else "",
        "HostConfig": _host_config(record, network),
        "NetworkSettings": _network_settings(record, network, running, pid),
        "LogPath": record.get("log") or "",
        "RestartCount": record.get("restart_count", 0),
        "Pod": record.get("pod") or "",
        **_rebuilt(record),
    }


def _host_config(record: dict[str, Any], network: dict[str, Any]) -> dict[str, Any]:
    return {
        "NetworkMode": f"pod:{record['pod']}"
        if record.get("pod")
        else {"minirun": "bridge", None: record.get("network_mode", "bridge")}.get(
            network.get("name"), network.get("name")
        ),
        "AutoRemove": bool(record.get("auto_remove")),
        "Init": bool(record.get("init")),
        "Privileged": bool((record.get("security") or {}).get("privileged")),
        "ReadonlyRootfs": bool(record.get("read_only")),
        "CapabilitiesEffective": (record.get("security") or {}).get("capabilities", []),
        "SecurityOpt": _security_opts(record.get("security") or {}),
        "LogConfig": _log_config(record),
        "RestartPolicy": _restart_policy(record),
    }


def _restart_policy(record: dict[str, Any]) -> dict[str, Any]:
    name, _, count = str((record.get("spec") or {}).get("restart") or "no").partition(":")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def _network_settings(record: dict[str, Any], network: dict[str, Any], running: bool, pid: int) -> dict[str, Any]:
    address, _, prefix = (network.get("address") or "").partition("/")
    return {
        "IPAddress": address if running else "",
        "IPPrefixLen": int(prefix) if prefix and running else 0,
        "Gateway": network.get("gateway", "") if running else "",
        "MacAddress": _mac_address(pid) if pid and record.get("network_mode") in ("bridge", "pod") else "",
        "SandboxKey": f"/proc/{pid}/ns/net" if pid else "",
        "HostVeth": network.get("host_veth", "") if running else "",
        "Bridge": network.get("bridge", ""),
        "Network": network.get("name", ""),
        "Ports": docker_ports(ports_of(record)) if running else {},
    }


def _rebuilt(record: dict[str, Any]) -> dict[str, Any]:
    """For a record rebuilt from the kernel (runtime.rebuild): from which damaged file, and what it does not
    know (shown above as empty, never guessed)."""
    if not record.get("rebuilt"):
        return {}
    return {
        "Rebuilt": {
            "From": record.get("rebuilt_from", ""),
            "At": record.get("rebuilt_at", ""),
            "Unknown": record.get("unknown", []),
        }
    }


def image_label(record: dict[str, Any], default: str = "-") -> str:
    """The image a container runs, as `ps` shows it: its name, or its short id once untagged."""
    image = record.get("image")
    if not image:
        return default
    return image.get("name") or image.get("id", "")[:12]


def _log_config(record: dict[str, Any]) -> dict[str, Any]:
    """Docker's HostConfig.LogConfig; the Type says truthfully that the files hold raw bytes, not JSON."""
    from minirun.runtime import logfile

    return {"Type": logfile.DRIVER, "Config": record.get("log_config") or {}}


def _security_opts(security: dict[str, Any]) -> list[str]:
    if not security:
        return []
    opts = [f"no-new-privileges={'true' if security.get('no_new_privs', True) else 'false'}"]
    if security.get("seccomp") == "unconfined":
        opts.append("seccomp=unconfined")
    return opts


def _mac_address(pid: int) -> str:
    """eth0's MAC as the container sees it, read through its own /sys (no netns switch needed)."""
    try:
        # /proc/PID/root/sys is the container's sysfs, mounted from inside its netns
        with open(f"/proc/{pid}/root/sys/class/net/eth0/address") as f:
            return f.read().strip()
    except OSError:
        return ""


def select_field(document: Any, template: str) -> str:
    """A small subset of Go templates: '{{.State.Pid}}', '{{json .Config}}', several per line."""
    import json
    import re

    def resolve(match: re.Match) -> str:
        as_json, path = match.group(1), match.group(2)
        value = document
        for part in filter(None, path.split(".")):
            if not isinstance(value, dict) or part not in value:
                raise MinirunError(f'template: no field "{part}" in {path}', code=1)
            value = value[part]
        if as_json or isinstance(value, dict | list):
            return json.dumps(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return re.sub(r"\{\{\s*(json\s+)?(\.[\w.]*)\s*\}\}", resolve, template)


def logs(record: dict[str, Any], tail: int | None = None) -> bytes:
    """What a detached container wrote, across its rotated log files, oldest first."""
    from minirun.runtime import logfile

    path = _log_path(record)
    return logfile.read(path, _log_options(record), tail)


def _log_options(record: dict[str, Any]):
    """The record's log options; a rebuilt record does not know them: every rotated file there is is read."""
    from minirun.runtime import logfile

    if record.get("rebuilt") and not record.get("log_config"):
        return logfile.LogOptions("unknown", "unknown", 0, logfile.MAX_FILES_LIMIT)
    return logfile.from_record(record.get("log_config"))


def _log_path(record: dict[str, Any]) -> str:
    path = record.get("log")
    if not path:
        raise MinirunError(
            f"container {record['id']} has no log: it ran in the foreground, where output went to the terminal",
            code=1,
        )
    return path


def follow_logs(record: dict[str, Any], tail: int | None = None) -> Iterator[bytes]:
    """The log so far (or its last `tail` lines), then what is written, until the container has exited.

    "Exited" is what the supervisor records once it has written the container's last bytes (or, when the
    supervisor is gone, the process being gone): following stops only when nothing more can come."""
    from minirun.runtime import logfile

    def finished() -> bool:
        current = store.load(record["id"])
        if current is None or model.is_at_rest(current):
            return True
        return not model.container_alive(current) and not store.owner_alive(current)

    yield from logfile.follow(_log_path(record), _log_options(record), tail, finished)


def pod_status(pod: dict[str, Any]) -> str:

    if not model.is_ready(pod):
        return "Creating"
    pod_members = store.pod_members(pod["name"])
    if any(model.is_running(m) for m in pod_members):
        return "Running"
    return "Exited" if pod_members else "Created"


def pod_rows() -> list[dict[str, Any]]:

    result = []
    for pod in store.all_pods():
        pod_members = store.pod_members(pod["name"])
        result.append(
            {
                "Name": pod["name"],
                "ID": pod["id"],
                "Status": pod_status(pod),
                "IP": ((pod.get("network") or {}).get("address") or "-").split("/")[0],
                "Members": len(pod_members),
                "Running": sum(1 for m in pod_members if model.is_running(m)),
                "Created": pod.get("created"),
            }
        )
    return result


def inspect_pod(pod: dict[str, Any]) -> dict[str, Any]:
    network = pod.get("network") or {}
    address, _, prefix = (network.get("address") or "").partition("/")
    return {
        "Id": pod["id"],
        "Name": pod["name"],
        "Created": pod.get("created"),
        "State": pod_status(pod),
        "Hostname": pod.get("hostname"),
        "SharedNamespaces": pod.get("share", []),
        "NetNS": pod.get("pins", {}).get("net", ""),
        "NetNSName": os.path.basename(pod.get("pins", {}).get("net", "")),
        "Pins": pod.get("pins", {}),
        "IPAddress": address,
        "IPPrefixLen": int(prefix) if prefix else 0,
        "Gateway": network.get("gateway", ""),
        "HostVeth": network.get("host_veth", ""),
        "Bridge": network.get("bridge", ""),
        "Members": [
            {
                "Id": m["id"],
                "Name": m.get("name"),
                "Status": status_text(m),
                "Pid": m.get("pid") if model.is_running(m) else 0,
            }
            for m in store.pod_members(pod["name"])
        ],
    }
