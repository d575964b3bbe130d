"""What a minirun network is, and the built-in default one (docker0's counterpart)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
import zlib
from typing import NamedTuple

from minirun import jsonstore, paths
from minirun.errors import ConfigError, MinirunError

DEFAULT_NETWORK = "minirun"
DEFAULT_BRIDGE = "minirun0"
# Clear of Docker (172.17/16), Podman (10.88/16) and Kubernetes' usual pod range (10.244/16).
DEFAULT_SUBNET = "10.77.0.0/16"
DEFAULT_MTU = 1500
# The default network's subnet can be moved, like dockerd's --bip: for hosts where 10.77/16 is taken.
SUBNET_ENV = "MINIRUN_SUBNET"
SMALLEST_PREFIX = 30  # network + gateway + one container + broadcast


class Network(NamedTuple):
    name: str
    bridge: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    internal: bool = False  # no way out: no masquerade, forwarding off the bridge dropped
    mtu: int | None = None  # the default MTU of its containers' eth0 and veths

    @property
    def gateway_interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{self.gateway}/{self.subnet.prefixlen}")


def parse_subnet(text: str, origin: str) -> ipaddress.IPv4Network:
    """A CIDR with room for a gateway and at least one container; host bits must be zero."""
    try:
        subnet = ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise ConfigError(
            f'invalid subnet "{text}" in {origin}: {exc}', hint="use a CIDR such as 10.77.0.0/16"
        ) from None
    if subnet.prefixlen > SMALLEST_PREFIX:
        raise ConfigError(
            f"subnet {subnet} in {origin} is too small", hint=f"use a prefix of /{SMALLEST_PREFIX} or shorter"
        )
    if subnet.is_loopback or subnet.is_multicast or subnet.is_unspecified or subnet.is_link_local:
        raise ConfigError(f"subnet {subnet} in {origin} is not usable for containers", hint="use a private range")
    return subnet


def default_network() -> Network:
    subnet = parse_subnet(os.environ.get(SUBNET_ENV) or DEFAULT_SUBNET, SUBNET_ENV)
    return Network(name=DEFAULT_NETWORK, bridge=DEFAULT_BRIDGE, subnet=subnet, gateway=subnet.network_address + 1)


# User networks (`minirun network create`) are records in the state root; the default one is built in.
_NAME = re.compile(r"^[a-z0-9]([a-z0-9_.-]{0,62})$")
BRIDGE_PREFIX = "mr-"
RESERVED = ("bridge", "none", "host", DEFAULT_NETWORK)


def validate_name(name: str) -> str:
    if not _NAME.match(name) or name in RESERVED:
        raise ConfigError(
            f'invalid network name "{name}"',
            hint="use lowercase letters, digits, '_', '.', '-' (not bridge, none, host or minirun)",
        )
    return name


def bridge_name(name: str) -> str:
    """mr-NAME when that fits IFNAMSIZ (15), else mr- and 8 hex of its CRC-32: recomputable from the name."""
    candidate = f"{BRIDGE_PREFIX}{name}"
    return candidate if len(candidate) <= 15 and "." not in name else f"{BRIDGE_PREFIX}{zlib.crc32(name.encode()):08x}"


def record_path(name: str) -> str:
    return os.path.join(paths.networks_dir(), f"{name}.json")


def save_record(record: dict) -> None:
    """Write a network's record (whole, atomically): network records are written here and nowhere else."""
    jsonstore.write_atomic(record_path(record["name"]), record)


def remove_record(name: str) -> None:
    jsonstore.remove_file(record_path(name))


def from_record(record: dict) -> Network:
    subnet = ipaddress.IPv4Network(record["subnet"])
    return Network(
        record["name"],
        record["bridge"],
        subnet,
        ipaddress.IPv4Address(record["gateway"]),
        bool(record.get("internal")),
        record.get("mtu"),
    )


def to_record(network: Network) -> dict:
    return {
        "name": network.name,
        "bridge": network.bridge,
        "subnet": str(network.subnet),
        "gateway": str(network.gateway),
        "internal": network.internal,
        "mtu": network.mtu,
    }


def from_attachment(record: dict) -> Network | None:
    """The network an attachment record (attach.Attachment.as_record) sits on, from that record alone:
    teardown must not depend on the network's own record. None when the record lacks what is needed."""
    try:
        address = ipaddress.IPv4Interface(record["address"])
        return Network(record["name"], record["bridge"], address.network, ipaddress.IPv4Address(record["gateway"]))
    except (KeyError, TypeError, ValueError):
        return None


_WARNED: set[str] = set()  # once per command


class DamagedRecord(MinirunError):
    """A network record that cannot be read: the network (its bridge, its addresses) may still be in use,
    so it is neither reused nor removed on the strength of that file."""


def load(name: str) -> Network | None:
    """The network `name`, None when it has no record; DamagedRecord when its record cannot be read."""
    path = record_path(name)
    try:
        with open(path) as f:
            return from_record(json.load(f))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise DamagedRecord(
            f"the record of network {name} ({path}) is damaged: {exc}",
            hint=f"repair it, or move it away once nothing uses the network (bridge {bridge_name(name)})",
        ) from None


def has_resolver(network: Network) -> bool:
    """Whether minirun's resolver serves `network`'s gateway:53: it is a user network, exactly as recorded
    (a CNI network of the same name is not)."""
    return network.name not in RESERVED and load(network.name) == network


def user_networks() -> list[Network]:
    found = []
    for name in jsonstore.record_names(paths.networks_dir()):
        try:
            network = load(name)
        except DamagedRecord as exc:  # every other network still works; this one is named, not guessed
            if exc.msg not in _WARNED:
                _WARNED.add(exc.msg)
                print(f"minirun: warning: {exc.msg}; {exc.hint}", file=sys.stderr)
            continue
        if network is not None:
            found.append(network)
    return found


def all_networks() -> list[Network]:
    return [default_network(), *user_networks()]


def resolve(name: str) -> Network:
    """`--network NAME`: bridge (or minirun) is the default network; anything else must have been created."""
    if name in ("bridge", DEFAULT_NETWORK):
        return default_network()
    network = load(name)
    if network is None:
        raise ConfigError(
            f'unknown network "{name}"', hint="use bridge|none|host, or create it: minirun network create NAME"
        )
    return network
