"""Making a mount and every mount below it read-only and nodev: in one call with mount_setattr (Linux
5.12+), else one remount per mount point, each keeping its own flags.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re

from minirun.fs.mountpoints import is_within
from minirun.kernel import syscalls as k


def read_only_tree(top: str) -> None:
    """Make the mount at `top` and every mount below it read-only and nodev, in this mount namespace."""
    try:
        k.mount_setattr_recursive(top, k.MOUNT_ATTR_RDONLY | k.MOUNT_ATTR_NODEV)
        return
    except OSError as exc:
        # ENOSYS: a kernel before 5.12; EPERM: an outer seccomp profile (an older container runtime's)
        # that does not know the syscall. mount(2) still does the job, one mount at a time.
        if exc.errno not in (errno.ENOSYS, errno.EPERM):
            raise
    remount_each_read_only(top)


def remount_each_read_only(top: str) -> None:
    """For kernels before 5.12 (no mount_setattr): remount each mount point under `top` that can be
    reached by path, parents first. A bind remount sets the per-mount flags to exactly those given, so
    each mount's own flags are carried over."""
    for target, flags in _mount_points():
        if target == top or is_within(target, top):
            with contextlib.suppress(FileNotFoundError):  # gone since mountinfo was read
                k.mount(None, target, None, k.MS_REMOUNT | k.MS_BIND | k.MS_RDONLY | k.MS_NODEV | flags)


_MOUNT_OPTION_FLAGS = {"nosuid": k.MS_NOSUID, "noexec": k.MS_NOEXEC, "noatime": k.MS_NOATIME}


def _mount_points() -> list[tuple[str, int]]:
    """(mount point, its MS_* flags worth keeping) from /proc/self/mountinfo, in mount order."""
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            # The kernel escapes space, tab, newline and backslash as \ooo (octal); other bytes are raw.
            target = os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4]))
            flags = 0
            for option in fields[5].decode().split(","):
                flags |= _MOUNT_OPTION_FLAGS.get(option, 0)
            found.append((target, flags))
    return found
