"""What a firewall driver reports about the rules in place (FirewallDriver.rules_survey): plain records, so that
doctor and topology can show and repair them without knowing how the driver stores its rules."""

from __future__ import annotations

import ipaddress
from typing import NamedTuple


class ForeignDrop(NamedTuple):
    """A chain of another tool that drops forwarded traffic unless something accepts it first."""

    family: str
    table: str
    chain: str


class NetworkRules(NamedTuple):
    """One network's rules: its masquerade, its resolver's fence (None: the network has no resolver) and,
    when another tool's forward chain drops by default, whether minirun's accepts for its bridge are there."""

    masquerade: bool
    dns_guard: bool | None
    foreign_drop: ForeignDrop | None
    foreign_accepts: bool


class LeakedRule(NamedTuple):
    """A rule tagged for a network that no longer exists."""

    where: str  # "FAMILY TABLE CHAIN"
    handle: int
    comment: str


class RulesSurvey(NamedTuple):
    networks: dict[str, NetworkRules]  # by network name
    leaked: list[LeakedRule]
    guard: bool  # the 127/8 guard is in place
    loopback_targets: list[ipaddress.IPv4Address]  # addresses the host reaches on 127/8 through published ports
