"""What a minirun network is, and the built-in default one (docker0's counterpart)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_NETWORK = "minirun"
DEFAULT_BRIDGE = "minirun0"
# Clear of Docker (172.17/16), Podman (10.88/16) and Kubernetes' usual pod range (10.244/16).
DEFAULT_SUBNET = "10.77.0.0/16"
DEFAULT_MTU = 1500


@dataclass(frozen=True)
class Network:
    name: str
    bridge: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address

    @property
    def gateway_interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{self.gateway}/{self.subnet.prefixlen}")


def default_network() -> Network:
    subnet = ipaddress.IPv4Network(DEFAULT_SUBNET)
    return Network(name=DEFAULT_NETWORK, bridge=DEFAULT_BRIDGE, subnet=subnet, gateway=subnet.network_address + 1)
