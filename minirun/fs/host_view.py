"""A container's view of the host's own tree, when it runs without an image, as bubblewrap shows it
(`--ro-bind / / --dev /dev --proc /proc --tmpfs /tmp`): every host mount read-only and nodev, private
writable dirs at /tmp, /var/tmp and /run, a minimal /dev, the generated /etc files, and minirun's own
state and data hidden. Privileged, the host's tree as it is, writable, as under `ip netns exec`.
"""

from __future__ import annotations

import contextlib
import errno
import os

from minirun.fs.devfs import populate_dev
from minirun.fs.etcfiles import ETC_FILES
from minirun.fs.masks import PROC_FLAGS
from minirun.fs.mountpoints import bind_etc_files, is_within
from minirun.fs.readonly import read_only_tree
from minirun.kernel import syscalls as k

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
        populate_dev(staging, console_fd, confined=True)
        k.mount(staging, "/dev", None, k.MS_MOVE)
        os.rmdir(staging)
        for name, fd in etc_sources.items():
            # After /run is covered: the host's /etc/resolv.conf is often a link into /run (systemd-resolved's
            # stub-resolv.conf), whose target now is in the container's own /run and must be made there.
            _bind_over(f"/proc/self/fd/{fd}", os.path.join("/etc", name), writable_link_targets=covered)
        for path in hidden:
            if not any(is_within(path, top) for top in covered):
                k.mount("tmpfs", path, "tmpfs", k.MS_RDONLY | PROC_FLAGS, "mode=755,size=4k")
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
        if not os.path.islink(target) or not any(is_within(resolved, top) for top in writable_link_targets):
            return
        os.makedirs(os.path.dirname(resolved), exist_ok=True)
        os.close(os.open(resolved, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    elif not os.path.isfile(resolved):
        return
    k.mount(source, resolved, None, k.MS_BIND)
    # Writable, as Docker's /etc/hosts: a bind takes its source mount's flags, read-only here.
    k.mount(None, resolved, None, k.MS_REMOUNT | k.MS_BIND | k.MS_NOSUID | k.MS_NODEV)


def _current_dir() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None


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
