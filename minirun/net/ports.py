"""Published ports (`-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]`) as DNAT in minirun's nft table.

Where a published port must be reachable, and how:
- from another machine, via the host's address: `prerouting` DNAT for destinations that are local;
- from the host itself, via its address or 127.0.0.1: `output` DNAT, plus `route_localnet` on the bridge
  (the kernel refuses to route 127/8 otherwise) and a masquerade of 127/8 sources leaving by the bridge,
  so the container's reply comes back to the host;
- from a container on the same bridge via the host's address (hairpin): masquerade of DNATed traffic
  that goes back out of the bridge, so the reply returns through the host and is un-NATed.
The moby#45610 trap: a DNAT in prerouting also matches packets that a neighbour sends to 127.0.0.1, which
then stop being martians and are forwarded to the container. So prerouting rules never match 127/8, a
port published on 127.0.0.1 gets only an `output` rule, and a raw-prerouting guard drops 127/8 arriving
on anything but lo (as Docker does since 24.0).
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from minirun.errors import ConfigError
from minirun.net.firewall_tags import (
    CHAIN_DNAT,
    CHAIN_GUARD,
    CHAIN_OUTPUT,
    CHAIN_SNAT,
    GUARD_TAG,
    PORT_TAG_PREFIX,
    TABLE_REF,
    port_owner_tag,
    ports_network_tag,
)

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


def mapping_of_rule(rule: dict) -> tuple[PortMapping, str] | None:
    """The mapping a DNAT rule of render_mappings publishes, and the address it leads to, from the rule as
    `nft -j` lists it; None for any other rule. "ip daddr X" names the host address; without it (only
    "fib daddr type local", and "!= 127.0.0.0/8" in prerouting) it is every local address."""
    host_ip, port, proto, target = "0.0.0.0", None, None, None
    for expr in rule.get("expr") or []:
        match, dnat = expr.get("match"), expr.get("dnat")
        if isinstance(dnat, dict):
            target = dnat
        if not isinstance(match, dict) or match.get("op") != "==":
            continue
        payload = (match.get("left") or {}).get("payload") if isinstance(match.get("left"), dict) else None
        if not isinstance(payload, dict):
            continue
        if payload.get("protocol") == "ip" and payload.get("field") == "daddr" and isinstance(match["right"], str):
            host_ip = match["right"]
        elif payload.get("protocol") in ("tcp", "udp") and payload.get("field") == "dport":
            port, proto = match.get("right"), payload["protocol"]
    if not isinstance(port, int) or target is None or not isinstance(target.get("port"), int):
        return None
    return PortMapping(host_ip, port, target["port"], proto), str(target.get("addr"))


def render_infrastructure() -> str:
    """The chains that every published port uses; idempotent (add of an existing chain is a no-op)."""
    return "\n".join(
        [
            f"add table {TABLE_REF}",
            f"add chain {TABLE_REF} {CHAIN_DNAT} {{ type nat hook prerouting priority dstnat; policy accept; }}",
            f"add chain {TABLE_REF} {CHAIN_OUTPUT} {{ type nat hook output priority -100; policy accept; }}",
            f"add chain {TABLE_REF} {CHAIN_SNAT} {{ type nat hook postrouting priority srcnat; policy accept; }}",
            "",
        ]
    )


def render_guard() -> str:
    """The 127/8 guard: one host-wide rule, needed whenever any interface routes 127/8 (net/localnet.py).
    Its chain is its own, so that adding it never touches the nat chains."""
    return "\n".join(
        [
            f"add table {TABLE_REF}",
            f"add chain {TABLE_REF} {CHAIN_GUARD} {{ type filter hook prerouting priority raw; policy accept; }}",
            f'add rule {TABLE_REF} {CHAIN_GUARD} iifname != "lo" ip daddr 127.0.0.0/8 drop comment "{GUARD_TAG}"',
            "",
        ]
    )


def render_network_rules(bridge: str, subnet: str) -> str:
    """Per network, once: hairpin and host-loopback masquerade (flushable chains are shared, so these carry
    the network's tag and are added only when missing; see firewall.ensure_ports)."""
    note = f'comment "{ports_network_tag(bridge)}"'
    return "\n".join(
        [
            f'add rule {TABLE_REF} {CHAIN_SNAT} oifname "{bridge}" ip saddr {subnet} ct status dnat masquerade {note}',
            f'add rule {TABLE_REF} {CHAIN_SNAT} oifname "{bridge}" ip saddr 127.0.0.0/8 masquerade {note}',
            "",
        ]
    )


def needs_localnet(mappings: tuple[PortMapping, ...]) -> bool:
    """Whether the host reaches some of `mappings` on 127.0.0.1: then the bridge must route 127/8."""
    return any(m.host_ip == "0.0.0.0" or m.loopback_only for m in mappings)


def loopback_targets(rules: list[dict]) -> list[ipaddress.IPv4Address]:
    """From `nft -j list` items: the DNAT targets of published ports that the host reaches on 127/8 (the
    output-hook rules matching 127.x or every local address, as render_mappings writes them)."""
    found = []
    for item in rules:
        rule = item.get("rule") or {}
        if rule.get("chain") != CHAIN_OUTPUT or not str(rule.get("comment", "")).startswith(PORT_TAG_PREFIX):
            continue
        daddr: object = None
        target: object = None
        for expr in rule.get("expr", []):
            match = expr.get("match") or {}
            if (match.get("left") or {}).get("payload") == {"protocol": "ip", "field": "daddr"}:
                daddr = match.get("right")
            if "dnat" in expr:
                target = (expr["dnat"] or {}).get("addr")
        if not isinstance(target, str):
            continue
        try:
            address = ipaddress.IPv4Address(target)
        except ValueError:
            continue  # not a rule of ours
        # A match we cannot read counts as reaching loopback: route_localnet then stays on (the guard too).
        if not isinstance(daddr, str) or _is_loopback(daddr):
            found.append(address)
    return found


def _is_loopback(text: str) -> bool:
    try:
        return ipaddress.IPv4Address(text).is_loopback
    except ValueError:
        return True


def render_mappings(owner: str, address: str, mappings: tuple[PortMapping, ...]) -> str:
    """The DNAT rules of one container or pod, tagged with its id so teardown finds exactly these."""
    note = f'comment "{port_owner_tag(owner)}"'
    lines = []
    for m in mappings:
        target = f"{m.proto} dport {m.host_port} dnat ip to {address}:{m.container_port} {note}"
        if m.host_ip == "0.0.0.0":
            match_local = "fib daddr type local ip daddr != 127.0.0.0/8"
            lines.append(f"add rule {TABLE_REF} {CHAIN_DNAT} {match_local} {target}")
            lines.append(f"add rule {TABLE_REF} {CHAIN_OUTPUT} fib daddr type local {target}")
        elif m.loopback_only:
            lines.append(f"add rule {TABLE_REF} {CHAIN_OUTPUT} ip daddr {m.host_ip} {target}")
        else:
            lines.append(f"add rule {TABLE_REF} {CHAIN_DNAT} ip daddr {m.host_ip} {target}")
            lines.append(f"add rule {TABLE_REF} {CHAIN_OUTPUT} ip daddr {m.host_ip} {target}")
    return "\n".join([*lines, ""])


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
