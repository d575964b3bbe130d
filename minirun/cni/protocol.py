"""The CNI wire protocol (SPEC.md of containernetworking/cni): parameters from the environment, the network
configuration from stdin, results and errors as JSON on stdout. Pure: no kernel, no files.

Versions: 0.3.0, 0.3.1, 0.4.0 and 1.0.0 are answered in their own shape (0.3.x/0.4.0 `ips` carry
`"version": "4"`). 1.1.0 (STATUS, GC) is spoken only with a configuration that asks for it: Podman 4.3 and
containerd 1.6 reject a 1.1.0 result, so a 1.0.0 configuration never gets one.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

BASE_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
V11 = "1.1.0"
ALL_VERSIONS = (*BASE_VERSIONS, V11)
DEFAULT_VERSION = "1.0.0"

# Error codes (SPEC.md, "Error"); >= 100 are this plugin's own.
LOCK_TIMEOUT_ENV = "MINIRUN_CNI_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 30.0  # seconds; kubelet's own CNI call timeout is minutes, a stuck lock is a bug


def lock_timeout() -> float:
    try:
        return float(os.environ.get(LOCK_TIMEOUT_ENV) or DEFAULT_LOCK_TIMEOUT)
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT


ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN = 11
ERR_NOT_AVAILABLE = 50
ERR_PLUGIN = 100  # an operation failed (the message names it)
ERR_IFACE_EXISTS = 101  # ADD: CNI_IFNAME is already in the netns (ADD is not idempotent)
ERR_ADDRESS = 102  # the requested address is taken or outside the range; the range is exhausted
ERR_CHECK = 103  # CHECK: the kernel or the records differ from what ADD set up

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
# Which variables each command needs (libcni's skel: CNI_NETNS is optional for DEL, containerd sends "").
_REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}
# CNI_ARGS keys with a meaning here, and the ones runtimes send for information (Kubernetes' pod identity).
ARGS_USED = ("IP", "MAC", "IgnoreUnknown")
ARGS_INFORMATIONAL = ("K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID")


class CniError(Exception):
    """Becomes `{"cniVersion", "code", "msg", "details"}` on stdout and a non-zero exit."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def as_json(self, version: str) -> dict[str, Any]:
        return {"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details}


class Params(NamedTuple):
    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    path: str


def parse_env(environ: dict[str, str]) -> Params:
    """The CNI_* parameters; missing or malformed ones are error 4, naming the variable."""
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise CniError(ERR_INVALID_ENV, "CNI_COMMAND is not set", "set CNI_COMMAND to ADD, DEL, CHECK or VERSION")
    if command not in COMMANDS:
        raise CniError(ERR_INVALID_ENV, f"unknown CNI_COMMAND: {command}", f"one of {', '.join(COMMANDS)}")
    for var in _REQUIRED[command]:
        if not environ.get(var):
            raise CniError(ERR_INVALID_ENV, f"{var} is required for {command} but is not set")
    container_id = environ.get("CNI_CONTAINERID", "")
    if container_id and (
        not (container_id[0].isascii() and container_id[0].isalnum())
        or not all(c.isascii() and (c.isalnum() or c in "_.-") for c in container_id)
    ):
        raise CniError(ERR_INVALID_ENV, f"invalid CNI_CONTAINERID {container_id!r}", "[a-zA-Z0-9][a-zA-Z0-9_.-]*")
    ifname = environ.get("CNI_IFNAME", "")
    if ifname and not (
        len(ifname) < 16 and "/" not in ifname and ":" not in ifname and not any(c.isspace() for c in ifname)
    ):
        raise CniError(ERR_INVALID_ENV, f"invalid CNI_IFNAME {ifname!r}", "at most 15 characters, no '/', ':' or space")
    if ifname in (".", ".."):
        raise CniError(ERR_INVALID_ENV, f"invalid CNI_IFNAME {ifname!r}")
    return Params(
        command,
        container_id,
        environ.get("CNI_NETNS", ""),
        ifname,
        parse_args(environ.get("CNI_ARGS", "")),
        environ.get("CNI_PATH", ""),
    )


def parse_args(text: str) -> dict[str, str]:
    """CNI_ARGS `K=V;K2=V2`. Unknown keys are an error unless IgnoreUnknown is true (libcni's LoadArgs)."""
    found: dict[str, str] = {}
    for pair in text.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(ERR_INVALID_ENV, f"CNI_ARGS: invalid pair {pair!r}", "expected KEY=VALUE;KEY=VALUE")
        found[key] = value
    ignore = found.get("IgnoreUnknown", "").lower() in ("1", "true")
    unknown = [k for k in found if k not in ARGS_USED and k not in ARGS_INFORMATIONAL]
    if unknown and not ignore:
        raise CniError(
            ERR_INVALID_ENV, f"CNI_ARGS: unknown key {unknown[0]!r}", "add IgnoreUnknown=1 to CNI_ARGS to allow it"
        )
    return found


def load_config(data: bytes | str) -> dict[str, Any]:
    """The JSON object on stdin; anything else is error 6."""
    try:
        config = json.loads(data or b"null")
    except ValueError as exc:
        raise CniError(ERR_DECODE, f"cannot decode the network configuration on stdin: {exc}") from None
    if not isinstance(config, dict):
        raise CniError(ERR_DECODE, "the network configuration on stdin must be a JSON object")
    return config


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def config_version(config: dict[str, Any]) -> str:
    """The configuration's cniVersion (absent means 0.1.0, as libcni decodes it)."""
    version = config.get("cniVersion", "0.1.0")
    if not isinstance(version, str):
        raise CniError(ERR_INVALID_CONFIG, 'cniVersion must be a string such as "1.0.0"')
    return version


def check_version(config: dict[str, Any], command: str) -> str:
    """The version to answer in; error 1 when this plugin does not speak it (or it is too old for the command)."""
    version = config_version(config)
    if version not in ALL_VERSIONS:
        raise CniError(
            ERR_INCOMPATIBLE_VERSION,
            f"incompatible CNI version {version}",
            f"this plugin supports {', '.join(ALL_VERSIONS)}",
        )
    if command in ("GC", "STATUS") and _version_key(version) < _version_key(V11):
        raise CniError(ERR_INCOMPATIBLE_VERSION, f"config version {version} does not allow {command} (needs {V11})")
    if command == "CHECK" and _version_key(version) < _version_key("0.4.0"):
        raise CniError(ERR_INCOMPATIBLE_VERSION, f"config version {version} does not allow CHECK (needs 0.4.0)")
    return version


def version_answer(config: dict[str, Any] | None) -> dict[str, Any]:
    """VERSION: the versions this plugin speaks; 1.1.0 only to a caller that asks in 1.1.0."""
    asked = (config or {}).get("cniVersion") or DEFAULT_VERSION
    supported = list(ALL_VERSIONS) if asked == V11 else list(BASE_VERSIONS)
    answer_in = asked if asked in supported else DEFAULT_VERSION
    return {"cniVersion": answer_in, "supportedVersions": supported}


def error_version(config: dict[str, Any] | None) -> str:
    """The cniVersion an error is reported in: the configuration's when we speak it."""
    version = (config or {}).get("cniVersion")
    return version if version in ALL_VERSIONS else DEFAULT_VERSION


def render_result(result: dict[str, Any], version: str) -> dict[str, Any]:
    """A 1.0.0-shaped result (interfaces, ips with interface index and gateway, routes, dns) in `version`.

    0.3.x and 0.4.0 are the same fields plus `"version": "4"` on each IP; 1.1.0 is 1.0.0's shape.
    """
    out: dict[str, Any] = {"cniVersion": version}
    out["interfaces"] = [dict(i) for i in result.get("interfaces", [])]
    ips = []
    for ip in result.get("ips", []):
        entry = dict(ip)
        if _version_key(version) < (1, 0, 0):
            entry = {"version": "4", **entry}
        ips.append(entry)
    out["ips"] = ips
    out["routes"] = [dict(r) for r in result.get("routes", [])]
    out["dns"] = dict(result.get("dns") or {})
    return out


def prev_addresses(config: dict[str, Any], ifname: str) -> list[str]:
    """IPv4 addresses (without prefix) that a prevResult gave `ifname` (any interface when unnamed)."""
    prev = config.get("prevResult")
    if not isinstance(prev, dict):
        return []
    interfaces = prev.get("interfaces") if isinstance(prev.get("interfaces"), list) else []
    found = []
    for ip in prev.get("ips") or []:
        if not isinstance(ip, dict) or not isinstance(ip.get("address"), str):
            continue
        index = ip.get("interface")
        if isinstance(index, int) and 0 <= index < len(interfaces):
            iface = interfaces[index]
            if isinstance(iface, dict) and iface.get("name") != ifname:
                continue
        address = ip["address"].split("/", 1)[0]
        if ":" not in address:
            found.append(address)
    return found
