"""Every name minirun gives its nftables objects, spelled once: its table, chains and set, and the comments
that tag its rules. The tags are how minirun finds its own rules again (to check, repair or delete them,
and to rebuild a container's published ports): a rule of minirun's is never recognised by its shape.

These strings are what the kernel shows and what scripts and the tests read (`nft list ruleset`;
tests/golden/*.nft, test_ports.py, test_localnet_guard.py): changing one orphans every rule tagged with the
old spelling on a running host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minirun.net.network import Network

__all__ = [
    "BRIDGE_SET",
    "CHAIN_DNAT",
    "CHAIN_GUARD",
    "CHAIN_OUTPUT",
    "CHAIN_SNAT",
    "DNS_CHAIN",
    "FAMILY",
    "GUARD_TAG",
    "ISOLATION_CHAIN",
    "NETWORK_TAG_PREFIX",
    "PORT_TAG_PREFIX",
    "TABLE",
    "TABLE_REF",
    "dns_tag",
    "isolation_tag",
    "masquerade_chain",
    "network_tag",
    "port_owner_tag",
    "ports_network_tag",
]

FAMILY = "inet"
TABLE = "minirun"
TABLE_REF = f"{FAMILY} {TABLE}"  # as nft commands name it: `nft list table inet minirun`

# A network's rules (nft.py)
BRIDGE_SET = "bridges"  # every minirun bridge, for the isolation rules
ISOLATION_CHAIN = "isolation"
DNS_CHAIN = "dns-guard"
NETWORK_TAG_PREFIX = "minirun network="  # masquerade, and the accepts in a foreign DROP chain

# Published ports and the 127/8 guard (nft_ports.py)
CHAIN_DNAT = "ports-prerouting"
CHAIN_OUTPUT = "ports-output"
CHAIN_SNAT = "ports-postrouting"
CHAIN_GUARD = "localnet-guard"
PORT_TAG_PREFIX = "minirun port owner="
GUARD_TAG = "minirun localnet-guard"


def masquerade_chain(network: Network) -> str:
    return f"masq-{network.name}"


def network_tag(network: Network) -> str:
    return f"{NETWORK_TAG_PREFIX}{network.name}"


def isolation_tag(network: Network) -> str:
    return f"minirun isolation network={network.name}"


def dns_tag(network: Network) -> str:
    return f"minirun dns network={network.name}"


def ports_network_tag(bridge: str) -> str:
    """The hairpin and host-loopback masquerade of published ports on one bridge. Unlike every other
    network tag it names the *bridge*, not the network: live hosts carry it in that spelling."""
    return f"minirun ports network={bridge}"


def port_owner_tag(owner: str) -> str:
    """The DNAT rules of one container, pod or CNI attachment."""
    return f"{PORT_TAG_PREFIX}{owner}"
