"""The three files every container gets in /etc: hostname, hosts, resolv.conf (Docker's rules).

They live in the state root (per container, or per pod for pod members) and are bind-mounted over the
image's (or, without an image, the host's) /etc files inside the container's private mount namespace, as
`ip netns exec` does with /etc/netns/NAME. The launcher writes them in place (never by rename), because a
bind mount pins the inode: the address in /etc/hosts is only known after the container has forked.
"""

from __future__ import annotations

import ipaddress
import os
from typing import NamedTuple

HOST_RESOLV_CONF_ENV = "MINIRUN_HOST_RESOLV_CONF"
HOST_RESOLV_CONF = "/etc/resolv.conf"
# systemd-resolved's file listing the real upstream servers (the one in /etc points at its 127.0.0.53 stub).
RESOLVED_UPSTREAMS_ENV = "MINIRUN_RESOLVED_CONF"
RESOLVED_UPSTREAMS = "/run/systemd/resolve/resolv.conf"
RESOLVED_STUB = "127.0.0.53"
# What Docker falls back to when the host lists no usable nameserver.
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
ETC_FILES = ("hostname", "hosts", "resolv.conf")

_HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


class NameOptions(NamedTuple):
    """What the user asked for with --dns and --add-host."""

    dns: tuple[str, ...] = ()
    add_hosts: tuple[tuple[str, str], ...] = ()  # (name, address)


def host_resolv_conf() -> tuple[str, str]:
    """The host's resolver configuration a container starts from: (path read, its text).

    Like Docker: when the host's file names only systemd-resolved's stub (unreachable from another netns),
    read resolved's list of upstream servers instead.
    """
    path = os.environ.get(HOST_RESOLV_CONF_ENV) or HOST_RESOLV_CONF
    text = _read(path)
    servers = _nameservers(text)
    if servers and all(server == RESOLVED_STUB for server in servers):
        upstreams = os.environ.get(RESOLVED_UPSTREAMS_ENV) or RESOLVED_UPSTREAMS
        upstream_text = _read(upstreams)
        if upstream_text:
            return upstreams, upstream_text
    return path, text


def resolv_conf(host_text: str, options: NameOptions, resolver: str | None = None) -> str:
    """A container's resolv.conf.

    `resolver`: the user network's own resolver (its gateway), which answers container names; otherwise the
    host's nameservers minus loopback ones (they mean the host, unreachable from the container's netns) and
    IPv6 ones (containers have no IPv6), falling back to Docker's public defaults when none remain. --dns
    replaces the nameservers in every case. search and options lines are kept, as Docker keeps them.
    """
    kept = [line for line in host_text.splitlines() if line.split()[:1] in (["search"], ["domain"], ["options"])]
    if options.dns:
        servers = list(options.dns)
        origin = "--dns"
    elif resolver:
        servers = [resolver]
        origin = "the network's resolver (minirun's supervisor answers container names)"
        kept = [line for line in kept if not line.startswith("options")] + ["options ndots:0"]
    else:
        servers = [s for s in _nameservers(host_text) if _usable(s)] or list(FALLBACK_NAMESERVERS)
        origin = "the host's resolv.conf without loopback and IPv6 nameservers"
    lines = [f"# minirun: generated from {origin}", *(f"nameserver {s}" for s in servers), *kept]
    return "\n".join(lines) + "\n"


def hosts(hostname: str, address: str | None, options: NameOptions) -> str:
    """Docker's /etc/hosts: localhost lines, --add-host entries, then the container's own address."""
    lines = [_HOSTS_HEADER]
    lines += [f"{ip}\t{name}\n" for name, ip in options.add_hosts]
    if address:
        short = hostname.split(".", 1)[0]
        names = hostname if short == hostname else f"{hostname} {short}"
        lines.append(f"{address}\t{names}\n")
    return "".join(lines)


def write_in_place(path: str, text: str) -> None:
    """Rewrite `path` keeping its inode (a bind mount of it would not see a renamed replacement)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def write_all(directory: str, hostname: str, address: str | None, resolv_text: str, options: NameOptions) -> None:
    os.makedirs(directory, mode=0o755, exist_ok=True)
    write_in_place(os.path.join(directory, "hostname"), hostname + "\n")
    write_in_place(os.path.join(directory, "hosts"), hosts(hostname, address, options))
    write_in_place(os.path.join(directory, "resolv.conf"), resolv_text)


def validate_dns(value: str) -> str:
    from minirun.errors import ConfigError

    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(
            f'invalid --dns "{value}"', hint="give a nameserver IP address, e.g. --dns 10.0.0.2"
        ) from None


def parse_add_host(value: str) -> tuple[str, str]:
    """--add-host NAME:IP (Docker also accepts NAME=IP); `host-gateway` is not supported."""
    from minirun.errors import ConfigError

    separator = "=" if "=" in value else ":"
    name, sep, ip = value.partition(separator)
    try:
        if not sep or not name or any(c.isspace() for c in name):
            raise ValueError
        return name, str(ipaddress.ip_address(ip.strip("[]")))
    except ValueError:
        raise ConfigError(f'invalid --add-host "{value}"', hint="use --add-host NAME:IP, e.g. db:10.77.0.9") from None


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _nameservers(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            found.append(fields[1])
    return found


def _usable(server: str) -> bool:
    try:
        address = ipaddress.ip_address(server.split("%")[0])
    except ValueError:
        return False
    return address.version == 4 and not address.is_loopback
