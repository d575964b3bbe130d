"""One line of `minirun doctor`'s report: what is wrong (or right), why it matters, how to fix it."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Finding(NamedTuple):
    ok: bool
    what: str
    why: str = ""
    fix: str = ""  # the command a person would type
    repair: Callable[[], object] | None = None  # minirun's own fix, for --fix
    note: bool = False  # informational: not a failure


def ok(what: str) -> Finding:
    return Finding(True, what)


def nft_fix(script: str) -> str:
    """A fix line that feeds `script` to nft."""
    return f"nft -f - <<'EOF'\n{script}EOF"
