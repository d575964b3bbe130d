"""Docker's masked and read-only paths: the parts of /proc and /sys that leak host state or are host
controls, hidden or made read-only in every container that is not privileged.
"""

from __future__ import annotations

import os
import stat

from minirun.kernel import syscalls as k

# How /proc, /sys and the covers over their paths are mounted: no setuid, no device, no exec.
PROC_FLAGS = k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC

# Docker's defaults (moby oci/defaults.go): hidden, because they leak host state or are host controls.
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def mask_paths(root: str, null_device: str = "/dev/null") -> None:
    """Docker's masked paths (files covered by a null device, dirs by an empty read-only tmpfs) and
    read-only ones. With an image, the null device is the container's own, as in Docker: the host's
    devtmpfs (and its size) does not show in the container's mount table."""
    for path in MASKED_PATHS:
        target = os.path.join(root, path.lstrip("/"))
        try:
            is_dir = stat.S_ISDIR(os.lstat(target).st_mode)
        except FileNotFoundError:
            continue
        if is_dir:
            k.mount("tmpfs", target, "tmpfs", k.MS_RDONLY)
        else:
            k.mount(null_device, target, None, k.MS_BIND)
    for path in READONLY_PATHS:
        target = os.path.join(root, path.lstrip("/"))
        if not os.path.lexists(target):
            continue
        k.mount(target, target, None, k.MS_BIND | k.MS_REC)
        k.mount(None, target, None, k.MS_REMOUNT | k.MS_BIND | k.MS_RDONLY | PROC_FLAGS)
