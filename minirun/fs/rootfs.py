"""The container's filesystem view, built by its first process inside its private mount namespace.

With an image: an overlay (image below, a per-container upper dir above) becomes the root through
pivot_root, with a fresh /proc for the PID namespace, a read-only /sys, a minimal /dev and the generated
/etc files (runc's rootfs_linux.go, nsjail's mnt.cc, in that order). Without one, the host's tree as
bubblewrap shows it (`--ro-bind / / --dev /dev --proc /proc --tmpfs /tmp`): every host mount read-only,
private tmpfs at /tmp, /var/tmp and /run, a minimal /dev, and minirun's own state and data hidden.
Either way Docker's masked and read-only paths are applied unless the container is privileged, and no
mount the container can write to lets a device node work (nodev): a container with CAP_MKNOD may create
a node with a host disk's numbers, but opening it fails. The few devices it needs are bound in.
Nothing here is visible on the host: the caller has made every mount private first.

This module is the front door runtime calls: the image view and the steps common to both views are here;
the host view is host_view; the pieces are devfs (/dev), masks (Docker's masked paths), readonly
(read-only mount trees) and mountpoints (safe mount targets, the /etc binds).

pivot_root(2): https://man7.org/linux/man-pages/man2/pivot_root.2.html; overlayfs:
https://docs.kernel.org/filesystems/overlayfs.html
"""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple

from minirun.fs.devfs import populate_dev
from minirun.fs.host_view import HOST_MODE_WRITABLE, build_host_view, explain_host
from minirun.fs.masks import PROC_FLAGS, mask_paths
from minirun.fs.mountpoints import bind_etc_files, ensure_dir
from minirun.kernel import syscalls as k

__all__ = [
    "HOST_MODE_WRITABLE",
    "ImageRoot",
    "build_host_view",
    "build_image_view",
    "enter_minimal_root",
    "explain_host",
    "explain_image",
    "finish_view",
    "image_root",
    "prepare_dirs",
]


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


def build_image_view(
    root: ImageRoot,
    etc_dir: str | None,
    *,
    confined: bool,
    console_fd: int | None = None,
    workdir: str | None = None,
) -> None:
    """Mount the overlay and everything inside it, pivot into it, and detach the host's tree: all of the
    container's view that does not depend on the PID or network namespace of the caller, so it
    may run before the fork into a shared PID namespace (see launch.fork_container). A missing `workdir` is
    created in the container's layer, as Docker does (before a --read-only remount)."""
    m = root.merged
    nodev = k.MS_NODEV if confined else 0
    k.mount("overlay", m, "overlay", nodev, f"lowerdir={root.lower},upperdir={root.upper},workdir={root.work}")
    for name in ("proc", "sys", "dev", "etc"):
        ensure_dir(os.path.join(m, name))
    populate_dev(os.path.join(m, "dev"), console_fd, confined=confined)
    if etc_dir:
        bind_etc_files(etc_dir, os.path.join(m, "etc"), create_missing=True)
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
        # A bind remount sets the mount's flags to exactly these: nodev must be named again.
        k.mount(None, "/", None, k.MS_REMOUNT | k.MS_BIND | k.MS_RDONLY | nodev)


def finish_view(*, confined: bool, own_sysfs: bool) -> None:
    """What the container's first process mounts itself, in its own PID and network namespaces: a /proc
    that shows its PID namespace, a /sys that shows its netns's links (read-only unless privileged), then
    Docker's masked and read-only paths (many of them are in /proc and /sys)."""
    k.mount("proc", "/proc", "proc", PROC_FLAGS)
    if own_sysfs:
        k.mount("sysfs", "/sys", "sysfs", PROC_FLAGS | (k.MS_RDONLY if confined else 0))
    if confined:
        mask_paths("/")


def enter_minimal_root(files: dict[str, str], scratch: str = "/tmp") -> None:
    """Make a read-only tmpfs holding only `files` (name in the new root -> host path, each bound
    read-only) this mount namespace's root, and detach the host's tree: no path, /proc/PID/root
    included, leads from this process back to the host's files. The caller made propagation private."""
    k.mount("tmpfs", scratch, "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=755,size=16k")
    for name, source in files.items():
        target = os.path.join(scratch, name)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o755))
        k.mount(source, target, None, k.MS_BIND)
        k.mount(None, target, None, k.MS_REMOUNT | k.MS_BIND | k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV)
    os.chdir(scratch)
    k.pivot_root(".", ".")
    k.umount2(".", k.MNT_DETACH)
    os.chdir("/")
    k.mount(None, "/", None, k.MS_REMOUNT | k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV)


def explain_image(root: ImageRoot, etc_dir: str | None, confined: bool) -> list[str]:
    """The commands a person would type for build_image_view and finish_view (in the container's mount
    namespace)."""
    m = root.merged
    lines = [
        f"mount -t overlay overlay -o {'nodev,' if confined else ''}lowerdir={root.lower},upperdir={root.upper},"
        f"workdir={root.work} {m}",
        f"mount -t proc proc {m}/proc && mount -t sysfs -o {'ro' if confined else 'rw'} sysfs {m}/sys",
        f"mount -t tmpfs -o {'nodev,' if confined else ''}mode=755 tmpfs {m}/dev && "
        f"{'mount --bind <scratch>/null' if confined else 'mknod -m 666'} {m}/dev/null ...   "
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
