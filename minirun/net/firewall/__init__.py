"""The firewall driver: the rules a network and its published ports need (NAT, isolation, the resolver's
fence, DNAT, the 127/8 guard), behind one interface so that net/ can plan without caring how they are made.

- nft.py, nft_ports.py: the `nft` driver, minirun's own `table inet minirun` (the default; nftcmd.py runs
  the binary);
- none.py: the `none` driver, no rules (hosts with only --network none|host; unit tests of plans);
- tags.py: every table, chain, set and comment name, spelled once.

The module-level names below are the nft driver's functions as runtime/ calls them today (issue 14 ports
runtime onto FirewallDriver later; until then they stay importable here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from minirun.errors import ConfigError

if TYPE_CHECKING:
    from minirun.net.attachment_check import PortRules
    from minirun.net.firewall.facts import LeakedRule, RulesSurvey
    from minirun.net.network import Network
    from minirun.net.ports import PortMapping

# The nft driver's module-level functions runtime/ calls through this package, and where each lives. Loaded
# on first use (PEP 562): `firewall.tags` (imported by the pod join path) must not pull in the driver.
_EXPORTS = {
    "facts": ("ForeignDrop",),
    "nft": (
        "dns_guard_in_place",
        "ensure_network",
        "find_foreign_drop",
        "masquerade_in_place",
        "remove_network",
        "render_dns_guard",
        "render_forward_accepts",
        "render_isolation",
        "render_masquerade",
        "rule_handles",
        "rules_in_chain",
    ),
    "nft_ports": (
        "ensure_guard",
        "ensure_ports",
        "guard_in_place",
        "loopback_targets",
        "published_by",
        "release_localnet",
        "remove_ports",
        "render_guard",
    ),
    "nftcmd": ("apply", "list_json", "nft_binary"),
}
_EXPORTED = frozenset(name for names in _EXPORTS.values() for name in names)
__all__ = ["DRIVERS", "FirewallDriver", "select_driver", *sorted(_EXPORTED)]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTED:  # a submodule not imported yet (the import below asks for those) or a typo
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from minirun.net.firewall import facts, nft, nft_ports, nftcmd

    modules = {"facts": facts, "nft": nft, "nft_ports": nft_ports, "nftcmd": nftcmd}
    return next(getattr(modules[module], name) for module, names in _EXPORTS.items() if name in names)


class FirewallDriver(Protocol):
    """What net/ asks of a firewall. Every ensure converges (it changes only what is missing) and every
    removal is idempotent; *_commands describe a step for --explain and --dry-run."""

    name: str

    def validate(self) -> None:
        """Raise ConfigError (one line and a hint) when this host cannot apply the rules."""

    def ensure_network(self, network: Network) -> str:
        """The network's own rules exist; returns what was applied ("" when all was in place)."""

    def network_commands(self, network: Network, applied: str | None) -> list[str]:
        """ensure_network as commands: what it applied, or (None: not run yet) what it would."""

    def remove_network(self, network: Network) -> None: ...

    def removal_commands(self, network: Network) -> list[str]:
        """remove_network as commands."""

    def rules_survey(self, networks: list[Network]) -> RulesSurvey:
        """The rules in place for `networks` (all that exist: anything tagged for another is leaked), the
        127/8 guard and the loopback targets of published ports (one read of the rules)."""

    def delete_leaked(self, rule: LeakedRule) -> None: ...

    def ensure_guard(self) -> bool:
        """Put back the 127/8 guard if some interface routes 127/8 and it is missing; True when it did."""

    def release_localnet(self, network: Network) -> None:
        """`network`'s bridge stops routing 127/8 when no published port needs it (then the guard may go)."""

    def ensure_ports(self, network: Network, owner: str, address: str, mappings: tuple[PortMapping, ...]) -> None:
        """Publish `mappings` of `owner` at `address` (the caller holds paths.ports_lock())."""

    def ports_commands(
        self, network: Network, owner: str, address: str, mappings: tuple[PortMapping, ...]
    ) -> list[str]: ...

    def remove_ports(self, owner: str, network: Network | None = None) -> int:
        """Delete the port rules of `owner`; how many there were. With `network`, release its 127/8 routing."""

    def published_by(self, owner: str, address: str) -> list[PortMapping]: ...

    def ports_removal_commands(self, owner: str) -> list[str]:
        """remove_ports as commands."""

    def problems(self, network: Network, masquerade: bool, ports: PortRules | None) -> list[str]:
        """What is missing of one attachment's rules, first problem first; [] when all is there."""


DRIVERS = ("nft", "none")


def select_driver(name: str = "nft") -> FirewallDriver:
    """The driver called `name`; "nft" unless a caller (a --network none|host-only host, a test) asks."""
    if name == "nft":
        from minirun.net.firewall.nft import NftDriver

        return NftDriver()
    if name == "none":
        from minirun.net.firewall.none import NoneDriver

        return NoneDriver()
    raise ConfigError(f"unknown firewall driver {name!r}", hint=f"use one of {', '.join(DRIVERS)}")
