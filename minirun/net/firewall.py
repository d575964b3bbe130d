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

from minirun.errors import ConfigError, MinirunError
from minirun.net.network import Network

TABLE = "minirun"
FAMILY = "inet"
TAG_PREFIX = "minirun network="
NFT_ENV = "MINIRUN_NFT"  # path of the nft binary, when it is not on PATH


def tag(network: Network) -> str:
    return f"{TAG_PREFIX}{network.name}"


def masquerade_chain(network: Network) -> str:
    return f"masq-{network.name}"


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
            f'masquerade comment "{tag(network)}"',
            "",
        ]
    )


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
    note = f'comment "{tag(network)}"'
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
            and rule.get("comment") == tag(network)
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
    """Converge: the network's masquerade rule exists, and a foreign DROP on forward lets its bridge pass.

    Reads the ruleset once (~2 ms) and changes it only when something is missing: a commit that touches a
    nat base chain costs 13-21 ms here, so the steady state must not pay it on every run.
    Returns the foreign chain that needed our accepts (if any) and the script applied ("" if none was).
    """
    ruleset = list_json("ruleset")
    script = "" if masquerade_in_place(ruleset, network) else render_masquerade(network)
    target = find_foreign_drop(ruleset)
    if target is not None and not rule_handles(rules_in_chain(ruleset, target), tag(network)):
        script += render_forward_accepts(network, target)
    if script:
        apply(script)
    return target, script


def ensure_ports(network: Network, owner: str, address: str, mappings: tuple) -> None:
    """Publish `mappings` of `owner` (a container or pod at `address`) in one transaction."""
    from minirun.net import ports

    ruleset = list_json("ruleset")
    chains = {(i["chain"]["family"], i["chain"]["table"], i["chain"]["name"]) for i in ruleset if "chain" in i}
    script = ""
    if (FAMILY, TABLE, ports.CHAIN_DNAT) not in chains or (FAMILY, TABLE, ports.CHAIN_GUARD) not in chains:
        script += ports.render_infrastructure()
    network_note = f"minirun ports network={network.bridge}"
    present = [i["rule"] for i in ruleset if (i.get("rule") or {}).get("comment") == network_note]
    wanted = ports.render_network_rules(network.bridge, str(network.subnet))
    if len(present) != wanted.count("add rule"):  # missing or partly flushed: put back the whole set
        script += "".join(f"delete rule {FAMILY} {TABLE} {r['chain']} handle {r['handle']}\n" for r in present)
        script += wanted
    apply(script + ports.render_mappings(owner, address, mappings))


def remove_ports(owner: str) -> int:
    """Delete the DNAT rules tagged with `owner`; returns how many. None left is fine."""
    from minirun.net import ports

    tag_text = ports.owner_tag(owner)
    doomed = [i["rule"] for i in list_json("table", FAMILY, TABLE) if (i.get("rule") or {}).get("comment") == tag_text]
    if doomed:
        apply("".join(f"delete rule {FAMILY} {TABLE} {r['chain']} handle {r['handle']}\n" for r in doomed))
    return len(doomed)


def published_port_owners() -> set[str]:
    """Owners (container or pod ids) that have DNAT rules in the live ruleset."""
    from minirun.net import ports

    owners = set()
    for item in list_json("ruleset"):
        comment = (item.get("rule") or {}).get("comment") or ""
        if comment.startswith(ports.PORT_TAG):
            owners.add(comment[len(ports.PORT_TAG) :])
    return owners


def remove_network(network: Network) -> None:
    """Remove everything minirun added for `network`; what is already gone is fine."""
    script = ""
    for item in list_json("chains"):
        chain = item.get("chain")
        if not chain:
            continue
        if chain.get("table") == TABLE and chain.get("family") == FAMILY:
            if chain["name"] == masquerade_chain(network):
                script += render_masquerade_removal(network)
            continue
        if chain.get("hook") == "forward" or chain.get("name") == "DOCKER-USER":
            rules = list_json("chain", chain["family"], chain["table"], chain["name"])
            for handle in rule_handles(rules, tag(network)):
                script += f"delete rule {chain['family']} {chain['table']} {chain['name']} handle {handle}\n"
    remaining = [i for i in list_json("table", FAMILY, TABLE) if "chain" in i] if script else []
    if script:
        apply(script)
        if all(i["chain"]["name"] == masquerade_chain(network) for i in remaining):
            apply(f"delete table {FAMILY} {TABLE}\n")
