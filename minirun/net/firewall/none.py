"""The `none` firewall driver: minirun writes no rule at all.

For hosts that only ever run `--network none|host` (no nft binary needed) and for computing attachment plans
in unit tests without touching a ruleset. Without rules a bridge network has no NAT, no isolation between
networks and no published ports, so plans that ask for published ports are refused when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from minirun.errors import ConfigError
from minirun.net.firewall.facts import LeakedRule, NetworkRules, RulesSurvey
from minirun.net.network import Network

if TYPE_CHECKING:
    from minirun.net.attachment_check import PortRules


class NoneDriver:
    """No rules: every ensure is a no-op, every removal finds nothing (firewall/__init__.FirewallDriver)."""

    name = "none"

    def validate(self) -> None:
        return None

    def ensure_network(self, network: Network) -> str:
        return ""

    def network_commands(self, network: Network, applied: str | None) -> list[str]:
        return [f"# firewall driver none: no NAT or isolation rules for {network.subnet}"]

    def remove_network(self, network: Network) -> None:
        return None

    def removal_commands(self, network: Network) -> list[str]:
        return [f"# firewall driver none: no rules of {network.name} to remove"]

    def rules_survey(self, networks: list[Network]) -> RulesSurvey:
        rules = NetworkRules(masquerade=False, dns_guard=None, foreign_drop=None, foreign_accepts=False)
        return RulesSurvey({network.name: rules for network in networks}, [], False, [])

    def delete_leaked(self, rule: LeakedRule) -> None:
        return None

    def ensure_guard(self) -> bool:
        return False  # it never publishes a port, so nothing routes 127/8 because of minirun

    def release_localnet(self, network: Network) -> None:
        return None

    def ensure_ports(self, network: Network, owner: str, address: str, mappings: tuple) -> None:
        if mappings:
            raise ConfigError(
                "published ports need firewall rules, and the firewall driver is none",
                hint="drop -p, or use the nft driver",
            )

    def ports_commands(self, network: Network, owner: str, address: str, mappings: tuple) -> list[str]:
        return [f"# firewall driver none: {len(mappings)} port mapping(s) of {owner} cannot be published"]

    def remove_ports(self, owner: str, network: Network | None = None) -> int:
        return 0

    def published_by(self, owner: str, address: str) -> list:
        return []

    def ports_removal_commands(self, owner: str) -> list[str]:
        return [f"# firewall driver none: no port rules of {owner} to remove"]

    def problems(self, network: Network, masquerade: bool, ports: PortRules | None) -> list[str]:
        return []
