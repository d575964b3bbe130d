"""The container's filesystem view, built by its first process inside its private mount namespace.

With an image: an overlay (image below, a per-container upper dir above) becomes the root through
pivot_root, with a fresh /proc for the PID namespace, a read-only /sys, a minimal /dev and the generated
/etc files (runc's rootfs_linux.go, nsjail's mnt.cc, in that order). Without one the host's tree stays,
as under `ip netns exec`: /proc and /sys are remounted and the /etc files bind-mounted over the host's.
Either way Docker's masked and read-only paths are applied unless the container is privileged.
Nothing here is visible on the host: the caller has made every mount private first.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import NamedTuple

from minirun.fs.etcfiles import ETC_FILES
from minirun.kernel import syscalls as k

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

# The minimal /dev: (name, major, minor), all mode 0666, as runc creates them.
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)
_PROC_FLAGS = k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC


class ImageRoot(NamedTuple):
    """Where a container's overlay root is put together (all in its state directory)."""

    lower: str  # the image's rootfs, never written
    upper: str  # the container's changes
    work: str  # overlayfs's scratch dir, on the same filesystem as upper
    merged: str  # the mount point that becomes /
    read_only: bool = False


def image_root(container_dir: str, image_rootfs: str, read_only: bool) -> ImageRoot:
    return ImageRoot(
        image_rootfs,
        os.path.join(container_dir, "upper"),
        os.path.join(container_dir, "work"),
        os.path.join(container_dir, "rootfs"),
        read_only,
    )


def prepare_dirs(root: ImageRoot) -> None:
    """In the launcher, before the fork: the container's dirs (removed with the container)."""
    for path in (root.upper, root.work, root.merged):
        os.makedirs(path, mode=0o755, exist_ok=True)


def enter_image(
    root: ImageRoot,
    etc_dir: str | None,
    *,
    confined: bool,
    console_fd: int | None = None,
    workdir: str | None = None,
) -> None:
    """Mount the overlay and everything inside it, pivot into it, and detach the host's tree. A missing
    `workdir` is created in the container's layer, as Docker does (before a --read-only remount)."""
    m = root.merged
    k.mount("overlay", m, "overlay", 0, f"lowerdir={root.lower},upperdir={root.upper},workdir={root.work}")
    for name in ("proc", "sys", "dev", "etc"):
        _ensure_dir(os.path.join(m, name))
    k.mount("proc", os.path.join(m, "proc"), "proc", _PROC_FLAGS)
    # Read-only as Docker's (rw when privileged); it shows the links of the netns it is mounted from.
    k.mount("sysfs", os.path.join(m, "sys"), "sysfs", _PROC_FLAGS | (k.MS_RDONLY if confined else 0))
    _populate_dev(os.path.join(m, "dev"), console_fd)
    if etc_dir:
        bind_etc_files(etc_dir, os.path.join(m, "etc"), create_missing=True)
    if confined:
        mask_paths(m, null_device=os.path.join(m, "dev/null"))
    os.chdir(m)
    # pivot_root(".", ".") stacks the old root under the new one; unmounting "." then detaches it, so no
    # path leads back to the host's tree (runc's trick: no put_old directory needed in the image).
    k.pivot_root(".", ".")
    k.umount2(".", k.MNT_DETACH)
    os.chdir("/")
    if workdir:
        # Only now: before pivot_root an image's symlink could have led the mkdir onto the host's tree.
        with contextlib.suppress(OSError):  # e.g. a file in the way: chdir reports it
            os.makedirs(workdir, mode=0o755, exist_ok=True)
    if root.read_only:
        k.mount(None, "/", None, k.MS_REMOUNT | k.MS_BIND | k.MS_RDONLY)


def enter_host(etc_dir: str | None, *, confined: bool, own_sysfs: bool) -> None:
    """No image: the host's tree with this PID namespace's /proc, this netns's /sys and our /etc files."""
    k.mount("proc", "/proc", "proc", _PROC_FLAGS)
    if own_sysfs:
        # A sysfs mounted from inside the new netns shows its own links in /sys/class/net (as `ip netns exec`).
        k.mount("sysfs", "/sys", "sysfs", _PROC_FLAGS | (k.MS_RDONLY if confined else 0))
    if etc_dir:
        bind_etc_files(etc_dir, "/etc", create_missing=False)
    if confined:
        mask_paths("/")


def bind_etc_files(etc_dir: str, target_etc: str, *, create_missing: bool) -> None:
    for name in ETC_FILES:
        source = os.path.join(etc_dir, name)
        target = os.path.join(target_etc, name)
        if create_missing:
            _ensure_regular_file(target)
        elif not os.path.isfile(target):
            continue  # the host has none: nothing to cover (we never write into the host's /etc)
        k.mount(source, target, None, k.MS_BIND)


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
        k.mount(None, target, None, k.MS_REMOUNT | k.MS_BIND | k.MS_RDONLY | _PROC_FLAGS)


def _populate_dev(dev: str, console_fd: int | None) -> None:
    k.mount("tmpfs", dev, "tmpfs", k.MS_NOSUID | k.MS_STRICTATIME, "mode=755,size=65536k")
    for name, major, minor in DEVICES:
        path = os.path.join(dev, name)
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(path, 0o666)  # mknod's mode is filtered by the umask
    pts, shm, mqueue = (os.path.join(dev, name) for name in ("pts", "shm", "mqueue"))
    for path in (pts, shm, mqueue):
        os.mkdir(path, 0o755)
    # A devpts instance of its own: the container's ptys are not the host's, and /dev/ptmx opens here.
    k.mount("devpts", pts, "devpts", k.MS_NOSUID | k.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
    k.mount("shm", shm, "tmpfs", k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC, "mode=1777,size=65536k")
    k.mount("mqueue", mqueue, "mqueue", k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC)
    for name, target in DEV_LINKS:
        os.symlink(target, os.path.join(dev, name))
    if console_fd is not None:
        # As Docker with -t: the pty the command got is also /dev/console.
        console = os.path.join(dev, "console")
        _ensure_regular_file(console)
        # By path: the descriptor's own mount belongs to the launcher's mount namespace, not this copy of it.
        k.mount(os.ttyname(console_fd), console, None, k.MS_BIND)


def _ensure_dir(path: str) -> None:
    if os.path.islink(path):
        os.unlink(path)  # a mount point must not lead anywhere else (this edits the upper dir only)
    os.makedirs(path, mode=0o755, exist_ok=True)


def _ensure_regular_file(path: str) -> None:
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
        os.unlink(path)  # e.g. an image's resolv.conf -> ../run/systemd/resolve/stub-resolv.conf
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def explain_image(root: ImageRoot, etc_dir: str | None, confined: bool) -> list[str]:
    """The commands a person would type for enter_image (in the container's mount namespace)."""
    m = root.merged
    lines = [
        f"mount -t overlay overlay -o lowerdir={root.lower},upperdir={root.upper},workdir={root.work} {m}",
        f"mount -t proc proc {m}/proc && mount -t sysfs -o {'ro' if confined else 'rw'} sysfs {m}/sys",
        f"mount -t tmpfs -o mode=755 tmpfs {m}/dev && mknod -m 666 {m}/dev/null c 1 3 ...   "
        "# null zero full random urandom tty, pts, shm, mqueue",
    ]
    if etc_dir:
        lines.append(f"mount --bind {etc_dir}/hosts {m}/etc/hosts   # and hostname, resolv.conf")
    if confined:
        lines.append(f"mount --bind /dev/null {m}/proc/kcore ...   # Docker's masked and read-only paths")
    lines.append(f"cd {m} && pivot_root . . && umount -l .   # the image is now /, the host's tree is gone")
    if root.read_only:
        lines.append("mount -o remount,bind,ro /   # --read-only")
    return lines
