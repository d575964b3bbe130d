"""Capability names and sets, with Docker's defaults and its --cap-add/--cap-drop rules. Pure: the only
thing read from the system is the highest capability number the running kernel knows.

capabilities(7): https://man7.org/linux/man-pages/man7/capabilities.7.html; Docker's defaults:
https://docs.docker.com/engine/containers/run/#runtime-privilege-and-linux-capabilities
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from minirun.errors import ConfigError

# Index = capability number, as in <linux/capability.h>.
NAMES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
NUMBERS: dict[str, int] = {name: number for number, name in enumerate(NAMES)}

# Docker's default set: what a root process in a container may still do to the files and processes it owns.
DEFAULT: frozenset[str] = frozenset(
    {
        "CAP_CHOWN",  # chown files in the container's own tree (package managers)
        "CAP_DAC_OVERRIDE",  # root reads/writes files regardless of their mode bits
        "CAP_FSETID",  # keep setuid/setgid bits when root modifies a file
        "CAP_FOWNER",  # chmod/utime files root does not own
        "CAP_MKNOD",  # create device nodes (opening them is still up to the device cgroup)
        "CAP_NET_RAW",  # ping
        "CAP_SETGID",  # drop to another group (su, daemons)
        "CAP_SETUID",  # drop to another user
        "CAP_SETFCAP",  # set file capabilities (installing ping)
        "CAP_SETPCAP",  # drop capabilities further
        "CAP_NET_BIND_SERVICE",  # listen below port 1024
        "CAP_SYS_CHROOT",  # chroot (build tools)
        "CAP_KILL",  # signal processes of other users in the container
        "CAP_AUDIT_WRITE",  # login tools write to the audit log
    }
)

ALL = "ALL"
_HINT = "capability names are listed in `man 7 capabilities` (NET_ADMIN or CAP_NET_ADMIN, any case), or use ALL"


@functools.cache
def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):  # no /proc: assume the kernel knows every name we do
        return len(NAMES) - 1


@functools.cache
def bounding() -> int:
    """Our own bounding set: inside another container some capabilities are out of reach for good."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return (1 << (last_cap() + 1)) - 1


def supported() -> frozenset[str]:
    """Every capability this kernel knows and we can still grant (Docker's rule for ALL and --privileged:
    known to the kernel, named by us, in our own bounding set)."""
    return frozenset(name for name in NAMES[: last_cap() + 1] if bounding() & (1 << NUMBERS[name]))


def canonical(name: str, option: str = "--cap-add") -> str:
    """`net_admin`, `NET_ADMIN`, `cap_net_admin` -> `CAP_NET_ADMIN`; `all` -> `ALL`."""
    upper = name.strip().upper()
    if upper == ALL:
        return ALL
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in NUMBERS:
        raise ConfigError(f"unknown capability {name!r} in {option}", hint=_HINT)
    if full not in supported() and option == "--cap-add":
        raise ConfigError(
            f"--cap-add {name}: {full} is not supported by this kernel or not available here",
            hint=f"minirun itself does not hold {full} (is it running inside a container?); leave it out",
        )
    return full


def resolve(cap_add: Sequence[str] = (), cap_drop: Sequence[str] = ()) -> frozenset[str]:
    """The set a container keeps, with Docker's rules: `--cap-add ALL` is every capability except those
    dropped; otherwise `--cap-drop ALL` starts from nothing; otherwise the default set minus the drops.
    Then the adds, which win over a drop of the same name."""
    adds = {canonical(name, "--cap-add") for name in cap_add}
    drops = {canonical(name, "--cap-drop") for name in cap_drop}
    if ALL in adds:
        return supported() - drops
    base = frozenset() if ALL in drops else DEFAULT - drops
    return base | (adds - {ALL})


def numbers(caps: Iterable[str]) -> frozenset[int]:
    return frozenset(NUMBERS[name] for name in caps)


def mask(caps: Iterable[str]) -> int:
    """The bit mask /proc/PID/status shows for this set (CapEff: 00000000a80425fb for DEFAULT)."""
    return sum(1 << number for number in numbers(caps))


def short(name: str) -> str:
    """`CAP_NET_ADMIN` -> `NET_ADMIN`, as Docker prints them."""
    return name.removeprefix("CAP_")
