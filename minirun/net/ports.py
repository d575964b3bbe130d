"""Published ports (`-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]`): parsing, and the check that a host
port is free. How a mapping becomes DNAT rules (and why: hairpin, 127.0.0.1, the moby#45610 trap) is the
firewall driver's job, net/firewall/nft_ports.py.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from minirun.errors import ConfigError

_SPEC = re.compile(r"^(?:(?P<ip>[0-9.]+):)?(?P<host>\d+):(?P<container>\d+)(?:/(?P<proto>tcp|udp))?$")


class PortMapping(NamedTuple):
    host_ip: str  # "0.0.0.0": every local address
    host_port: int
    container_port: int
    proto: str = "tcp"

    def __str__(self) -> str:  # Docker's ps notation
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/{self.proto}"

    @property
    def loopback_only(self) -> bool:
        return ipaddress.IPv4Address(self.host_ip).is_loopback

    def overlaps(self, other: PortMapping) -> bool:
        """Both would receive some of the same packets (0.0.0.0 overlaps every address)."""
        if (self.proto, self.host_port) != (other.proto, other.host_port):
            return False
        return self.host_ip == other.host_ip or "0.0.0.0" in (self.host_ip, other.host_ip)


def parse(text: str) -> PortMapping:
    match = _SPEC.match(text)
    if not match:
        hint = "use -p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp], e.g. -p 8080:80"
        raise ConfigError(f'invalid port mapping "{text}"', hint=hint)
    host_ip = match.group("ip") or "0.0.0.0"
    try:
        address = ipaddress.IPv4Address(host_ip)
    except ValueError:
        raise ConfigError(f'invalid host address in "{text}"', hint="IPv4 only, e.g. -p 127.0.0.1:8080:80") from None
    ports = int(match.group("host")), int(match.group("container"))
    if not all(1 <= port <= 65535 for port in ports):
        raise ConfigError(f'port out of range in "{text}"', hint="ports are 1-65535")
    return PortMapping(str(address), ports[0], ports[1], match.group("proto") or "tcp")


def parse_all(items: list[str]) -> tuple[PortMapping, ...]:
    mappings = tuple(parse(item) for item in items)
    for i, a in enumerate(mappings):
        for b in mappings[i + 1 :]:
            if a.overlaps(b):
                raise ConfigError(f"-p {a} and -p {b} publish the same host port", hint="give each its own host port")
    return mappings


def needs_localnet(mappings: tuple[PortMapping, ...]) -> bool:
    """Whether the host reaches some of `mappings` on 127.0.0.1: then the bridge must route 127/8."""
    return any(m.host_ip == "0.0.0.0" or m.loopback_only for m in mappings)


def check_free(mappings: tuple[PortMapping, ...], published: dict[str, tuple[PortMapping, ...]]) -> None:
    """Refuse a host port that minirun already publishes (`published`: owner label -> its mappings) or that
    a process on the host has bound - the kernel would never deliver to both. Runs before anything is made."""
    import errno
    import socket

    for mapping in mappings:
        for owner, theirs in published.items():
            clash = next((other for other in theirs if mapping.overlaps(other)), None)
            if clash is not None:
                raise ConfigError(
                    f"host port {mapping.host_port}/{mapping.proto} is already published by {owner} ({clash})",
                    hint="choose another host port, or remove that container",
                )
        kind = socket.SOCK_STREAM if mapping.proto == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as probe:
            # SO_REUSEADDR so that a port in TIME_WAIT does not count as taken; a listener still does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((mapping.host_ip, mapping.host_port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(
                        f"host port {mapping.host_ip}:{mapping.host_port}/{mapping.proto} is in use by a process "
                        "on the host",
                        hint=f"stop it (ss -lnp 'sport = :{mapping.host_port}') or publish another host port",
                    ) from None
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise ConfigError(
                        f"{mapping.host_ip} is not an address of this host", hint="see ip -br addr"
                    ) from None
                raise
