"""The nftables driver's network rules: minirun's own `table inet minirun`, changed in atomic `nft -f -` runs.

Rendering is pure (text in, text out) so it can be unit-tested; applying is one transaction (nftcmd.py).
minirun never flushes or edits a table it does not own, with one narrow exception: when another tool
(Docker) has set a DROP policy on the forward hook, an accept in our own table does not help — every base
chain on the hook must accept — so we insert tagged accepts for our bridge into that tool's chain
(Docker's DOCKER-USER, made for exactly this, else filter FORWARD) and remove only those.
Published ports and the 127/8 guard are nft_ports.py.

nftables NAT: https://wiki.nftables.org/wiki-nftables/index.php/Performing_Network_Address_Translation_(NAT);
Docker's rules, for comparison: https://docs.docker.com/engine/network/packet-filtering-firewalls/
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from minirun.net.firewall import nft_ports
from minirun.net.firewall.facts import ForeignDrop, LeakedRule, NetworkRules, RulesSurvey
from minirun.net.firewall.nft_ports import missing_guard
from minirun.net.firewall.nftcmd import apply, delete_rules_script, list_json, nft_binary
from minirun.net.firewall.tags import (
    BRIDGE_SET,
    CHAIN_GUARD,
    DNS_CHAIN,
    FAMILY,
    ISOLATION_CHAIN,
    NETWORK_TAG_PREFIX,
    TABLE,
    TABLE_REF,
    dns_tag,
    isolation_tag,
    masquerade_chain,
    network_tag,
    port_owner_tag,
    ports_network_tag,
)
from minirun.net.network import Network, has_resolver
from minirun.net.ports import needs_localnet

if TYPE_CHECKING:
    from minirun.net.attachment_check import PortRules


def render_masquerade(network: Network) -> str:
    """One masquerade rule per network, in a chain of its own so re-applying it is idempotent.

    Traffic from the subnet to anywhere but the subnet leaves with the host's address (the seed's
    `iptables -t nat -A POSTROUTING -s 10.244.0.0/24 ! -o cni0 -j MASQUERADE`).
    """
    chain = masquerade_chain(network)
    return "\n".join(
        [
            f"add table {FAMILY} {TABLE}",
            f"add chain {FAMILY} {TABLE} {chain} {{ type nat hook postrouting priority srcnat; policy accept; }}",
            f"flush chain {FAMILY} {TABLE} {chain}",
            f"add rule {FAMILY} {TABLE} {chain} ip saddr {network.subnet} ip daddr != {network.subnet} "
            f'masquerade comment "{network_tag(network)}"',
            "",
        ]
    )


def render_isolation(network: Network) -> str:
    """Containers on different minirun networks cannot reach each other (Docker's and netavark's default):
    traffic from this bridge to any other minirun bridge is dropped on the forward hook. An --internal
    network also has no way out, and nothing is forwarded into it."""
    br, note = network.bridge, f'comment "{isolation_tag(network)}"'
    rule = f"add rule {FAMILY} {TABLE} {ISOLATION_CHAIN}"
    lines = [
        f"add table {FAMILY} {TABLE}",
        f"add set {FAMILY} {TABLE} {BRIDGE_SET} {{ type ifname; }}",
        f'add element {FAMILY} {TABLE} {BRIDGE_SET} {{ "{br}" }}',
        f"add chain {FAMILY} {TABLE} {ISOLATION_CHAIN} {{ type filter hook forward priority filter; policy accept; }}",
        f'{rule} iifname "{br}" oifname != "{br}" oifname @{BRIDGE_SET} drop {note}',
    ]
    if network.internal:
        lines += [
            f'{rule} iifname "{br}" oifname != "{br}" drop {note}',
            f'{rule} oifname "{br}" iifname != "{br}" drop {note}',
        ]
    return "\n".join([*lines, ""])


def render_dns_guard(network: Network) -> str:
    """A user network's resolver (gateway:53) is for its own containers only: DNS to that address is
    accepted from the network's bridge and subnet, and dropped from anywhere else - another network, the
    default one, a neighbour routing to the gateway (issue 12, hole 7: it was an open resolver)."""
    where = f"{FAMILY} {TABLE} {DNS_CHAIN}"
    to_resolver = f"ip daddr {network.gateway} meta l4proto {{ tcp, udp }} th dport 53"
    note = f'comment "{dns_tag(network)}"'
    return "\n".join(
        [
            f"add table {FAMILY} {TABLE}",
            f"add chain {where} {{ type filter hook input priority filter; policy accept; }}",
            f'add rule {where} {to_resolver} iifname "{network.bridge}" ip saddr {network.subnet} accept {note}',
            f"add rule {where} {to_resolver} counter drop {note}",
            "",
        ]
    )


def dns_guard_in_place(ruleset: list[dict], network: Network) -> bool:
    rules = [i for i in ruleset if (i.get("rule") or {}).get("comment") == dns_tag(network)]
    return len(rules) == render_dns_guard(network).count("add rule")


def _set_elements(named_set: dict) -> list[str]:
    return [e for e in named_set.get("elem", []) if isinstance(e, str)]


def isolation_in_place(ruleset: list[dict], network: Network) -> bool:
    rules = [i for i in ruleset if (i.get("rule") or {}).get("comment") == isolation_tag(network)]
    element = any(
        (i["set"]["table"], i["set"]["name"]) == (TABLE, BRIDGE_SET) and network.bridge in _set_elements(i["set"])
        for i in ruleset
        if "set" in i
    )
    return element and len(rules) == render_isolation(network).count("add rule")


def render_masquerade_removal(network: Network) -> str:
    return f"delete chain {FAMILY} {TABLE} {masquerade_chain(network)}\n"


def render_forward_accepts(network: Network, target: ForeignDrop) -> str:
    """Docker's own three FORWARD rules for docker0, for our bridge, inserted at the top of `target`."""
    where = f"{target.family} {target.table} {target.chain}"
    br = network.bridge
    note = f'comment "{network_tag(network)}"'
    return "\n".join(
        [
            f'insert rule {where} oifname "{br}" ct state established,related accept {note}',
            f'insert rule {where} iifname "{br}" oifname != "{br}" accept {note}',
            f'insert rule {where} iifname "{br}" oifname "{br}" accept {note}',
            # published ports: new connections DNATed to a container (Docker's DOCKER chain accepts)
            f'insert rule {where} oifname "{br}" ct status dnat accept {note}',
            "",
        ]
    )


def find_foreign_drop(chains: list[dict]) -> ForeignDrop | None:
    """From `nft -j list chains` output: where our accepts must go, or None when nothing drops.

    Docker's DOCKER-USER is preferred: Docker jumps to it first from FORWARD and never flushes it.
    """
    drops, docker_user = [], None
    for item in chains:
        chain = item.get("chain")
        if not chain or chain.get("table") == TABLE:
            continue
        if chain.get("name") == "DOCKER-USER" and chain.get("family") in ("ip", "inet"):
            docker_user = ForeignDrop(chain["family"], chain["table"], chain["name"])
        if (
            chain.get("hook") == "forward"
            and chain.get("policy") == "drop"
            and chain.get("family")
            in (
                "ip",
                "inet",
            )
        ):
            drops.append(ForeignDrop(chain["family"], chain["table"], chain["name"]))
    if not drops:
        return None
    return docker_user or drops[0]


def rule_handles(rules: list[dict], comment: str) -> list[int]:
    """Handles of the rules in `nft -j list chain …` output that carry `comment`."""
    return [item["rule"]["handle"] for item in rules if "rule" in item and item["rule"].get("comment") == comment]


def masquerade_in_place(ruleset: list[dict], network: Network) -> bool:
    """True when `nft -j list ruleset` shows the network's masquerade rule exactly as we render it."""
    subnet = f'"addr": "{network.subnet.network_address}", "len": {network.subnet.prefixlen}'
    for item in ruleset:
        rule = item.get("rule")
        if (
            rule
            and rule.get("family") == FAMILY
            and rule.get("table") == TABLE
            and rule.get("chain") == masquerade_chain(network)
            and rule.get("comment") == network_tag(network)
        ):
            text = json.dumps(rule.get("expr", []))
            return "masquerade" in text and text.count(subnet) == 2
    return False


def rules_in_chain(ruleset: list[dict], target: ForeignDrop) -> list[dict]:
    return [
        item
        for item in ruleset
        if "rule" in item
        and (item["rule"].get("family"), item["rule"].get("table"), item["rule"].get("chain"))
        == (target.family, target.table, target.chain)
    ]


def ensure_network(network: Network) -> tuple[ForeignDrop | None, str]:
    """Converge: the network's masquerade, isolation and (on a user network) resolver rules exist, a foreign
    DROP on forward lets its bridge pass, and the 127/8 guard is there if any interface routes 127/8.

    Reads the ruleset once (~2 ms) and changes it only when something is missing: a commit that touches a
    nat base chain costs 13-21 ms here, so the steady state must not pay it on every run.
    Returns the foreign chain that needed our accepts (if any) and the script applied ("" if none was).
    """
    ruleset = list_json("ruleset")
    script = ""
    if not network.internal and not masquerade_in_place(ruleset, network):
        script += render_masquerade(network)
    if not isolation_in_place(ruleset, network):
        stale = [i["rule"] for i in ruleset if (i.get("rule") or {}).get("comment") == isolation_tag(network)]
        script += delete_rules_script(stale)
        script += render_isolation(network)
    if has_resolver(network) and not dns_guard_in_place(ruleset, network):
        stale = [i["rule"] for i in ruleset if (i.get("rule") or {}).get("comment") == dns_tag(network)]
        script += delete_rules_script(stale)
        script += render_dns_guard(network)
    target = find_foreign_drop(ruleset)
    if target is not None and not rule_handles(rules_in_chain(ruleset, target), network_tag(network)):
        script += render_forward_accepts(network, target)
    script += missing_guard(ruleset)
    if script:
        apply(script)
    return target, script


def remove_network(network: Network) -> None:
    """Remove everything minirun added for `network` (its masquerade chain, isolation rules, bridge-set
    element, port helpers and the accepts in a foreign chain); what is already gone is fine."""
    ruleset = list_json("ruleset")
    ours = {network_tag(network), isolation_tag(network), dns_tag(network), ports_network_tag(network.bridge)}
    script = ""
    for item in ruleset:
        chain, rule, named_set = item.get("chain"), item.get("rule"), item.get("set")
        if chain and (chain["family"], chain["table"], chain["name"]) == (FAMILY, TABLE, masquerade_chain(network)):
            script += render_masquerade_removal(network)
        elif rule and rule.get("comment") in ours and rule.get("chain") != masquerade_chain(network):
            script += f"delete rule {rule['family']} {rule['table']} {rule['chain']} handle {rule['handle']}\n"
        elif (
            named_set
            and (named_set["family"], named_set["table"], named_set["name"]) == (FAMILY, TABLE, BRIDGE_SET)
            and network.bridge in _set_elements(named_set)
        ):
            script += f'delete element {FAMILY} {TABLE} {BRIDGE_SET} {{ "{network.bridge}" }}\n'
    if script:
        apply(script)


def network_commands(network: Network, applied: str | None) -> list[str]:
    """What ensure_network did (`applied`: the script, "" when all was in place) or, before it ran (None),
    what it applies when the rules are missing, as commands (--explain, --dry-run)."""
    if applied == "":
        return [f"# the NAT and isolation rules for {network.subnet} are already in place (nft list table {TABLE_REF})"]
    if applied is None:
        applied = ("" if network.internal else render_masquerade(network)) + render_isolation(network)
        applied += render_dns_guard(network) if has_resolver(network) else ""
    return [f"nft -f - <<'EOF'\n{applied}EOF"]


class NftDriver:
    """minirun's rules in `table inet minirun` through the nft binary (firewall/__init__.FirewallDriver)."""

    name = "nft"

    def validate(self) -> None:
        nft_binary()

    def ensure_network(self, network: Network) -> str:
        return ensure_network(network)[1]

    def network_commands(self, network: Network, applied: str | None) -> list[str]:
        return network_commands(network, applied)

    def remove_network(self, network: Network) -> None:
        remove_network(network)

    def removal_commands(self, network: Network) -> list[str]:
        return [
            f"nft delete chain {TABLE_REF} {masquerade_chain(network)}",
            f'nft delete element {TABLE_REF} {BRIDGE_SET} {{ "{network.bridge}" }}',
            f'nft delete rule ... # every rule tagged "{network_tag(network)}" or "{isolation_tag(network)}"',
        ]

    def rules_survey(self, networks: list[Network]) -> RulesSurvey:
        return rules_survey(list_json("ruleset"), networks)

    def delete_leaked(self, rule: LeakedRule) -> None:
        apply(f"delete rule {rule.where} handle {rule.handle}\n")

    def ensure_guard(self) -> bool:
        return nft_ports.ensure_guard()

    def release_localnet(self, network: Network) -> None:
        nft_ports.release_localnet(network)

    def ensure_ports(self, network: Network, owner: str, address: str, mappings: tuple) -> None:
        nft_ports.ensure_ports(network, owner, address, mappings)

    def ports_commands(self, network: Network, owner: str, address: str, mappings: tuple) -> list[str]:
        return nft_ports.ports_commands(network, owner, address, mappings)

    def remove_ports(self, owner: str, network: Network | None = None) -> int:
        return nft_ports.remove_ports(owner, network)

    def published_by(self, owner: str, address: str) -> list:
        return nft_ports.published_by(owner, address)

    def ports_removal_commands(self, owner: str) -> list[str]:
        return [
            f"nft delete rule {TABLE_REF} <chain> handle <h>   # each rule tagged "
            f'"{port_owner_tag(owner)}" (nft -a list table {TABLE_REF})'
        ]

    def problems(self, network: Network, masquerade: bool, ports: PortRules | None) -> list[str]:
        """What is missing of one attachment's rules, first problem first (CNI CHECK, doctor): the network's
        masquerade when `masquerade`; the port rules of `ports.owner`, and the 127/8 guard when they need it."""
        if not masquerade and ports is None:
            return []
        ruleset = list_json("ruleset")
        found = []
        if masquerade and not masquerade_in_place(ruleset, network):
            found.append(f"the masquerade rule for {network.subnet} is missing in table {TABLE_REF}")
        if ports is not None:
            have = nft_ports.port_rules_count(ruleset, ports.owner)
            want = nft_ports.expected_port_rules(ports.owner, ports.address, ports.mappings)
            if have != want:
                found.append(f"port rules of {ports.label}: {have} in table {TABLE_REF}, {want} expected")
            if needs_localnet(ports.mappings) and not nft_ports.guard_in_place(ruleset):
                found.append(f"{network.bridge} routes 127/8 but the 127/8 guard (chain {CHAIN_GUARD}) is missing")
        return found


def network_rules(ruleset: list[dict], network: Network, drop: ForeignDrop | None) -> NetworkRules:
    accepts = drop is not None and bool(rule_handles(rules_in_chain(ruleset, drop), network_tag(network)))
    dns = dns_guard_in_place(ruleset, network) if has_resolver(network) else None
    return NetworkRules(masquerade_in_place(ruleset, network), dns, drop, accepts)


def leaked_rules(ruleset: list[dict], networks: list[Network]) -> list[LeakedRule]:
    """Rules tagged `minirun network=NAME` for a NAME not among `networks` (all that exist)."""
    known = {network_tag(n) for n in networks}
    found = []
    for item in ruleset:
        rule = item.get("rule") or {}
        comment = rule.get("comment") or ""
        if comment.startswith(NETWORK_TAG_PREFIX) and comment not in known:
            found.append(LeakedRule(f"{rule['family']} {rule['table']} {rule['chain']}", rule["handle"], comment))
    return found


def rules_survey(ruleset: list[dict], networks: list[Network]) -> RulesSurvey:
    drop = find_foreign_drop(ruleset)
    return RulesSurvey(
        {network.name: network_rules(ruleset, network, drop) for network in networks},
        leaked_rules(ruleset, networks),
        nft_ports.guard_in_place(ruleset),
        nft_ports.loopback_targets(ruleset),
    )
