"""What a minirun network is, and the built-in default one (docker0's counterpart)."""

from __future__ import annotations

import ipaddress
import os
from typing import NamedTuple

from minirun.errors import ConfigError

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
