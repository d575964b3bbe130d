"""Running nft: where the binary is, one atomic `nft -f -` transaction, and `nft -j list` as JSON.

The one place minirun starts the nft binary (firewall/nft.py and nft_ports.py render and decide; this runs).
"""

from __future__ import annotations

import json
import os
import subprocess

from minirun.errors import ConfigError, MinirunError
from minirun.net.firewall.tags import FAMILY, TABLE

NFT_ENV = "MINIRUN_NFT"  # path of the nft binary, when it is not on PATH


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


def delete_rules_script(rules: list[dict]) -> str:
    """`delete rule` lines for rules of minirun's table (items of `nft -j list`, each with chain and handle)."""
    return "".join(f"delete rule {FAMILY} {TABLE} {r['chain']} handle {r['handle']}\n" for r in rules)
