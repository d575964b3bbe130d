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
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
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
        _ensure_dir(os.path.join(m, name))
    _populate_dev(os.path.join(m, "dev"), console_fd, confined=confined)
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
    k.mount("proc", "/proc", "proc", _PROC_FLAGS)
    if own_sysfs:
        k.mount("sysfs", "/sys", "sysfs", _PROC_FLAGS | (k.MS_RDONLY if confined else 0))
    if confined:
        mask_paths("/")


# Without an image: where the container may write (private, empty, gone with it), as bubblewrap's --tmpfs.
HOST_MODE_WRITABLE = (("/tmp", 0o1777), ("/var/tmp", 0o1777), ("/run", 0o755))
# With no directory of its own on disk to hold them (`minirun exec` into a pod), they are size-capped tmpfs.
SCRATCH_TMPFS_SIZE = "64m"


def build_host_view(
    etc_dir: str | None,
    *,
    confined: bool,
    hidden: tuple[str, ...],
    writable_dir: str | None,
    console_fd: int | None = None,
) -> None:
    """No image: the host's tree as the container sees it, but /proc, /sys and the masks (finish_view): all
    that does not depend on the caller's PID or network namespace.

    Confined (not --privileged): every host mount read-only and nodev (submounts too), a minimal /dev,
    private writable dirs on HOST_MODE_WRITABLE (subdirectories of `writable_dir`, on the data root's disk,
    or capped tmpfs), and each path in `hidden` (minirun's state and data roots, the netns pins) covered
    by an empty read-only tmpfs when it is not already under one of those.
    Privileged: the host's tree as it is, writable, as under `ip netns exec`.
    """
    if not confined:
        if etc_dir:
            bind_etc_files(etc_dir, "/etc", create_missing=False)
        return
    cwd = _current_dir()
    for path in hidden:
        # Created now, while the host's tree is writable: one that appeared later would not be covered.
        os.makedirs(path, mode=0o755, exist_ok=True)
    # The sources of the /etc binds, opened before anything covers them (they live on the data root);
    # bound from /proc/self/fd once the view is built.
    etc_sources = _open_paths(etc_dir, ETC_FILES) if etc_dir else {}
    writable_sources = _make_writable_sources(writable_dir) if writable_dir else None
    try:
        read_only_tree("/")
        covered = _mount_writable_dirs(writable_sources)
        # The new /dev is put together beside the host's and then moved over it: a -t console is bound by
        # path, and that path (the host's /dev/pts/N) must still be visible while it is.
        staging = os.path.join(covered[-1], ".minirun-dev")
        os.mkdir(staging, 0o755)
        _populate_dev(staging, console_fd, confined=True)
        k.mount(staging, "/dev", None, k.MS_MOVE)
        os.rmdir(staging)
        for name, fd in etc_sources.items():
            # After /run is covered: the host's /etc/resolv.conf is often a link into /run (systemd-resolved's
            # stub-resolv.conf), whose target now is in the container's own /run and must be made there.
            _bind_over(f"/proc/self/fd/{fd}", os.path.join("/etc", name), writable_link_targets=covered)
        for path in hidden:
            if not any(_is_within(path, top) for top in covered):
                k.mount("tmpfs", path, "tmpfs", k.MS_RDONLY | _PROC_FLAGS, "mode=755,size=4k")
    finally:
        for fd in etc_sources.values():
            os.close(fd)
    # The inherited working directory still points into the old, uncovered tree: enter the same path in
    # the new view (it may now be an empty directory, or gone).
    try:
        os.chdir(cwd or "/")
    except OSError:
        os.chdir("/")


def _make_writable_sources(writable_dir: str) -> dict[str, str]:
    """The container's directory for each of HOST_MODE_WRITABLE, made before the host's tree (which holds
    the data root) turns read-only."""
    sources = {}
    for path, mode in HOST_MODE_WRITABLE:
        source = os.path.join(writable_dir, path.strip("/").replace("/", "-"))
        os.makedirs(source, exist_ok=True)
        os.chmod(source, mode)
        sources[path] = source
    return sources


def _mount_writable_dirs(sources: dict[str, str] | None) -> list[str]:
    """Cover HOST_MODE_WRITABLE with the container's own directories (capped tmpfs without any); returns
    the ones covered."""
    covered = []
    for path, mode in HOST_MODE_WRITABLE:
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        if sources is None:
            k.mount("tmpfs", path, "tmpfs", k.MS_NOSUID | k.MS_NODEV, f"mode={mode:o},size={SCRATCH_TMPFS_SIZE}")
        else:
            k.mount(sources[path], path, None, k.MS_BIND)
            # A bind takes its source mount's flags (the data root's may allow devices): set ours.
            k.mount(None, path, None, k.MS_REMOUNT | k.MS_BIND | k.MS_NOSUID | k.MS_NODEV)
        covered.append(path)
    if not covered:
        raise OSError(errno.ENOENT, "none of /tmp, /var/tmp, /run is a directory on this host: nowhere to write")
    return covered


def _open_paths(directory: str, names: tuple[str, ...]) -> dict[str, int]:
    opened = {}
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            opened[name] = os.open(os.path.join(directory, name), os.O_PATH | os.O_CLOEXEC)
    return opened


def _bind_over(source: str, target: str, *, writable_link_targets: list[str]) -> None:
    """Bind `source` on `target` (following a symlink at `target`), writable. A target the host lacks is
    skipped (minirun never writes into the host's /etc); one that a symlink leads to inside the
    container's own writable dirs is created there first."""
    resolved = os.path.realpath(target)
    if not os.path.exists(resolved):
        if not os.path.islink(target) or not any(_is_within(resolved, top) for top in writable_link_targets):
            return
        os.makedirs(os.path.dirname(resolved), exist_ok=True)
        os.close(os.open(resolved, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    elif not os.path.isfile(resolved):
        return
    k.mount(source, resolved, None, k.MS_BIND)
    # Writable, as Docker's /etc/hosts: a bind takes its source mount's flags, read-only here.
    k.mount(None, resolved, None, k.MS_REMOUNT | k.MS_BIND | k.MS_NOSUID | k.MS_NODEV)


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
        if target == top or _is_within(target, top):
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


def _current_dir() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None


def _is_within(path: str, top: str) -> bool:
    path, top = os.path.normpath(path), os.path.normpath(top)
    return top == "/" or path == top or path.startswith(top + "/")


def bind_etc_files(etc_dir: str, target_etc: str, *, create_missing: bool) -> None:
    """Bind the generated files over /etc's."""
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


def _populate_dev(dev: str, console_fd: int | None, *, confined: bool) -> None:
    nodev = k.MS_NODEV if confined else 0
    k.mount("tmpfs", dev, "tmpfs", k.MS_NOSUID | k.MS_STRICTATIME | nodev, "mode=755,size=65536k")
    if confined:
        _bind_devices(dev)
    else:
        _make_devices(dev)
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
        # A bind takes its source mount's flags, and without an image the host's devpts is read-only and
        # nodev in this namespace by now: this one node must open.
        k.mount(None, console, None, k.MS_REMOUNT | k.MS_BIND | k.MS_NOSUID | k.MS_NOEXEC)


def _make_devices(directory: str) -> None:
    for name, major, minor in DEVICES:
        path = os.path.join(directory, name)
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(path, 0o666)  # mknod's mode is filtered by the umask


def _bind_devices(dev: str) -> None:
    """/dev is nodev, so its device nodes are made on a scratch tmpfs that allows them and bound in one by
    one (runc binds devices the same way in rootless mode); the scratch mount is detached before the
    container runs, so no writable place with device semantics is left for it to create nodes in."""
    scratch = os.path.join(dev, ".devices")
    os.mkdir(scratch, 0o700)
    k.mount("tmpfs", scratch, "tmpfs", k.MS_NOSUID | k.MS_NOEXEC, "mode=700,size=4k")
    try:
        _make_devices(scratch)
        for name, _, _ in DEVICES:
            target = os.path.join(dev, name)
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
            k.mount(os.path.join(scratch, name), target, None, k.MS_BIND)
    finally:
        k.umount2(scratch, k.MNT_DETACH)
        os.rmdir(scratch)


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


def explain_host(etc_dir: str | None, *, confined: bool, own_sysfs: bool) -> list[str]:
    """The commands a person would type for build_host_view and finish_view (in the container's mount
    namespace)."""
    lines = []
    if confined:
        lines.append("mount --bind -o remount,ro,nodev / (recursively: every host mount)   # the host, read-only")
    if own_sysfs:
        lines.append("mount -t sysfs sysfs /sys   # /sys/class/net now lists this netns's links")
    if etc_dir:
        lines.append(f"mount --bind {etc_dir}/hosts /etc/hosts   # and hostname, resolv.conf (as ip netns exec)")
    if confined:
        lines.append("mount -t tmpfs -o nodev tmpfs /dev && mount --bind <scratch>/null /dev/null ...   # minimal /dev")
        lines.append("mount -t tmpfs tmpfs /tmp; ... /var/tmp; ... /run   # private, writable, gone with the container")
        lines.append("mount --bind /dev/null /proc/kcore ...   # Docker's masked and read-only paths")
    return lines
