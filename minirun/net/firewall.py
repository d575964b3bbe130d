"""The nftables firewall driver: minirun's own `table inet minirun`, changed in atomic `nft -f -` runs.

Rendering is pure (text in, text out) so it can be unit-tested; applying is one transaction.
minirun never flushes or edits a table it does not own, with one narrow exception: when another tool
(Docker) has set a DROP policy on the forward hook, an accept in our own table does not help — every base
chain on the hook must accept — so we insert tagged accepts for our bridge into that tool's chain
(Docker's DOCKER-USER, made for exactly this, else filter FORWARD) and remove only those.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import NamedTuple

from minirun import filelock, paths
from minirun.errors import ConfigError, MinirunError
from minirun.net.firewall_tags import (
    BRIDGE_SET,
    CHAIN_DNAT,
    CHAIN_GUARD,
    DNS_CHAIN,
    FAMILY,
    GUARD_TAG,
    ISOLATION_CHAIN,
    TABLE,
    dns_tag,
    isolation_tag,
    masquerade_chain,
    network_tag,
    port_owner_tag,
    ports_network_tag,
)
from minirun.net.network import Network, has_resolver

NFT_ENV = "MINIRUN_NFT"  # path of the nft binary, when it is not on PATH


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


class ForeignDrop(NamedTuple):
    """A chain of another tool that drops forwarded traffic unless something accepts it first."""

    family: str
    table: str
    chain: str


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


def nft_binary() -> str:
    override = os.environ.get(NFT_ENV)
    if override:
        path = override if os.access(override, os.X_OK) else None
    else:
        # root's PATH may lack /usr/sbin (su without -), so look there too. (Not shutil.which: importing
        # shutil pulls in bz2 and lzma, ~3 ms on every run.)
        dirs = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/sbin"]
        path = next((f"{d}/nft" for d in dirs if d and os.access(f"{d}/nft", os.X_OK)), None)
    if path is None:
        raise ConfigError(
            "the nft binary is missing; minirun needs it for NAT",
            hint="apt-get install nftables, or use --network none|host",
        )
    return path


def _nft(args: list[str], script: str | None = None) -> str:
    proc = subprocess.run([nft_binary(), *args], input=script, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()
        first = detail[0] if detail else f"exit status {proc.returncode}"
        raise MinirunError(f"nft {' '.join(args)} failed: {first}")
    return proc.stdout


def apply(script: str) -> None:
    """Apply `script` as one atomic nftables transaction."""
    _nft(["-f", "-"], script)


def list_json(*what: str) -> list[dict]:
    return json.loads(_nft(["-j", "list", *what]) or '{"nftables": []}')["nftables"]


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
        script += "".join(f"delete rule {FAMILY} {TABLE} {r['chain']} handle {r['handle']}\n" for r in stale)
        script += render_isolation(network)
    if has_resolver(network) and not dns_guard_in_place(ruleset, network):
        stale = [i["rule"] for i in ruleset if (i.get("rule") or {}).get("comment") == dns_tag(network)]
        script += "".join(f"delete rule {FAMILY} {TABLE} {r['chain']} handle {r['handle']}\n" for r in stale)
        script += render_dns_guard(network)
    target = find_foreign_drop(ruleset)
    if target is not None and not rule_handles(rules_in_chain(ruleset, target), network_tag(network)):
        script += render_forward_accepts(network, target)
    script += _missing_guard(ruleset)
    if script:
        apply(script)
    return target, script


def _guard_rules(ruleset: list[dict]) -> list[dict]:
    return [
        i["rule"]
        for i in ruleset
        if (i.get("rule") or {}).get("comment") == GUARD_TAG
        and (i["rule"].get("family"), i["rule"].get("table"), i["rule"].get("chain")) == (FAMILY, TABLE, CHAIN_GUARD)
    ]


def guard_in_place(ruleset: list[dict]) -> bool:
    """The 127/8 guard (ports.render_guard) is in the live ruleset."""
    return bool(_guard_rules(ruleset))


def _missing_guard(ruleset: list[dict], needed: bool = False) -> str:
    """The guard's script when it is missing and needed (asked for, or some interface routes 127/8: after
    an `nft flush ruleset` the bridges keep route_localnet=1); "" otherwise. The sysctls are read only
    when the guard is missing, so the steady state costs nothing."""
    from minirun.net import localnet, ports

    if guard_in_place(ruleset) or not (needed or localnet.routing_interfaces()):
        return ""
    return ports.render_guard()


def ensure_guard() -> bool:
    """Put back the 127/8 guard if some interface routes 127/8 and it is missing; True when it did."""
    script = _missing_guard(list_json("ruleset"))
    if script:
        apply(script)
    return bool(script)


def ensure_ports(network: Network, owner: str, address: str, mappings: tuple) -> None:
    """Publish `mappings` of `owner` (a container or pod at `address`) in one transaction; then, if the host
    reaches one on 127.0.0.1, let the bridge route 127/8 - only once the guard is in place. Callers hold
    paths.ports_lock() (remove_ports switches route_localnet off under it)."""
    from minirun.net import localnet, ports

    ruleset = list_json("ruleset")
    chains = {(i["chain"]["family"], i["chain"]["table"], i["chain"]["name"]) for i in ruleset if "chain" in i}
    script = ""
    if (FAMILY, TABLE, CHAIN_DNAT) not in chains:
        script += ports.render_infrastructure()
    network_note = ports_network_tag(network.bridge)
    present = [i["rule"] for i in ruleset if (i.get("rule") or {}).get("comment") == network_note]
    wanted = ports.render_network_rules(network.bridge, str(network.subnet))
    if len(present) != wanted.count("add rule"):  # missing or partly flushed: put back the whole set
        script += "".join(f"delete rule {FAMILY} {TABLE} {r['chain']} handle {r['handle']}\n" for r in present)
        script += wanted
    loopback = ports.needs_localnet(mappings)
    script += _missing_guard(ruleset, needed=loopback)
    apply(script + ports.render_mappings(owner, address, mappings))
    if loopback:
        # 127.0.0.1 -> container: the kernel routes 127/8 out of a device only with route_localnet
        localnet.set_routing(network.bridge, True)


def remove_ports(owner: str, network: Network | None = None) -> int:
    """Delete the DNAT rules tagged with `owner`; returns how many. None left is fine (no table either).
    With `network` (where the owner's ports led), route_localnet is then released (release_localnet)."""
    tag_text = port_owner_tag(owner)
    with filelock.exclusive(paths.ports_lock()):
        ruleset = list_json("ruleset")
        doomed = [i["rule"] for i in ruleset if (i.get("rule") or {}).get("comment") == tag_text]
        doomed = [r for r in doomed if (r.get("family"), r.get("table")) == (FAMILY, TABLE)]
        if doomed:
            apply("".join(f"delete rule {FAMILY} {TABLE} {r['chain']} handle {r['handle']}\n" for r in doomed))
        if network is not None:
            _release_localnet([i for i in ruleset if (i.get("rule") or {}).get("comment") != tag_text], network)
    return len(doomed)


def published_by(owner: str, address: str) -> list:
    """The port mappings the DNAT rules tagged with `owner` publish to `address` (ports.PortMapping), in
    the order they were added, each once."""
    from minirun.net import ports

    tag_text = port_owner_tag(owner)
    found = []
    for item in list_json("ruleset"):
        rule = item.get("rule") or {}
        if rule.get("comment") != tag_text or (rule.get("family"), rule.get("table")) != (FAMILY, TABLE):
            continue
        parsed = ports.mapping_of_rule(rule)
        if parsed is not None and parsed[1] == address and parsed[0] not in found:
            found.append(parsed[0])
    return found


def release_localnet(network: Network) -> None:
    """When no published port sends 127/8 into `network`'s subnet, its bridge stops routing 127/8; when no
    interface routes 127/8 any more, the guard goes too (in that order: never routing without the guard).
    Under paths.ports_lock(), so that a concurrent publish on the bridge never finds it switched off."""
    with filelock.exclusive(paths.ports_lock()):
        _release_localnet(list_json("ruleset"), network)


def _release_localnet(ruleset: list[dict], network: Network) -> None:
    from minirun.net import localnet, ports

    ours = [i for i in ruleset if "rule" in i and (i["rule"].get("family"), i["rule"].get("table")) == (FAMILY, TABLE)]
    if not any(address in network.subnet for address in ports.loopback_targets(ours)):
        localnet.set_routing(network.bridge, False)
    guards = _guard_rules(ruleset)
    if guards and not localnet.routing_interfaces():
        apply("".join(f"delete rule {FAMILY} {TABLE} {r['chain']} handle {r['handle']}\n" for r in guards))


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
