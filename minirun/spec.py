"""What the user asked for, validated before anything touches the kernel. Pure: no I/O beyond reading."""

from __future__ import annotations

import re
from typing import NamedTuple

from minirun.errors import ConfigError

NETWORK_MODES = ("bridge", "none", "host")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MIN_MTU, MAX_MTU = 68, 65535

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_HOST_LABEL = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
_ENV_KEY = re.compile(r"^[^=\0]+$")
# A pod's name is also its hostname (a DNS label) and part of its netns name (minirun-NAME).
_POD_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class ContainerSpec(NamedTuple):
    command: tuple[str, ...]
    name: str | None = None
    hostname: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    network: str = "bridge"
    mtu: int | None = None
    remove: bool = False
    timings: bool = False
    debug: bool = False
    detach: bool = False
    interactive: bool = False
    tty: bool = False
    init: bool = False
    pod: str | None = None
    explain: bool = False
    dry_run: bool = False
    verbose: bool = False
    ports: tuple = ()  # of minirun.net.ports.PortMapping
    image: str | None = None
    entrypoint: str | None = None
    read_only: bool = False
    user: str | None = None  # UID[:GID] or a name from the image's (or host's) /etc/passwd
    dns: tuple[str, ...] = ()
    add_hosts: tuple[tuple[str, str], ...] = ()
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    security_opts: tuple[str, ...] = ()
    log_options: tuple[str, ...] = ()  # --log-opt KEY=VALUE, as given (minirun.runtime.logfile parses them)
    restart: str = "no"  # --restart, Docker's policy (minirun.restart_policy)


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f'invalid container name "{name}"',
            hint="use letters, digits, '_', '.', '-', starting with a letter or digit (at most 128)",
        )
    return name


def validate_hostname(hostname: str) -> str:
    labels = hostname.split(".")
    if len(hostname) > 64 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ConfigError(
            f'invalid hostname "{hostname}"',
            hint="use RFC 1123 labels (letters, digits, inner '-') separated by dots, at most 64 characters",
        )
    return hostname


def validate_pod_name(name: str) -> str:
    if not _POD_NAME.match(name):
        raise ConfigError(
            f'invalid pod name "{name}"',
            hint="use lowercase letters, digits and inner '-', at most 63 (it becomes the hostname and "
            "the netns name minirun-NAME)",
        )
    return name


def parse_env(item: str, host_env: dict[str, str]) -> tuple[str, str] | None:
    """`-e K=V` sets K; `-e K` copies K from minirun's own environment (absent there: skipped), as Docker."""
    key, sep, value = item.partition("=")
    if not key or not _ENV_KEY.match(key) or "\0" in value or key != key.strip():
        raise ConfigError(f'invalid environment variable "{item}"', hint="use -e KEY=VALUE (or -e KEY)")
    if not sep:
        return (key, host_env[key]) if key in host_env else None
    return key, value


_NETWORK_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def validate_network(mode: str) -> str:
    """bridge, none, host, or the name of a network made with `minirun network create` (checked at run)."""
    if mode not in NETWORK_MODES and not _NETWORK_NAME.match(mode):
        raise ConfigError(f'unknown network "{mode}"', hint=f"use --network {'|'.join(NETWORK_MODES)}|NAME")
    return mode


def validate_mtu(mtu: int | None) -> int | None:
    if mtu is not None and not MIN_MTU <= mtu <= MAX_MTU:
        raise ConfigError(f"invalid --mtu {mtu}", hint=f"use a value between {MIN_MTU} and {MAX_MTU}")
    return mtu


def container_env(
    spec: ContainerSpec, hostname: str, image_env: tuple[str, ...] = (), home: str = "/root"
) -> dict[str, str]:
    """The command's environment, as Docker builds it: PATH (the image's, else the default), HOSTNAME, the
    image's Env, HOME (the user's), then the user's -e in order (later wins)."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    env.update(item.split("=", 1) for item in image_env if "=" in item)
    env.setdefault("HOME", home)
    env.update(dict(spec.env))
    return env
