"""minirun needs root's namespace and network powers; say which ones when they are missing."""

from __future__ import annotations

import os

from minirun.errors import MinirunError

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
_NEEDED = {CAP_SYS_ADMIN: "CAP_SYS_ADMIN (namespaces, mounts)", CAP_NET_ADMIN: "CAP_NET_ADMIN (links, nftables)"}


def effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def require_root() -> None:
    missing = [text for bit, text in _NEEDED.items() if not effective_caps() & (1 << bit)]
    if os.geteuid() != 0 or missing:
        needs = ", ".join(missing or _NEEDED.values())
        raise MinirunError(f"minirun must run as root: it needs {needs}", hint="run it with sudo")
