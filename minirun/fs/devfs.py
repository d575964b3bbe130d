"""The container's minimal /dev, as runc makes it: a small tmpfs with six device nodes, the standard
symlinks, a devpts instance of its own, /dev/shm and /dev/mqueue, and with -t the pty as /dev/console.
"""

from __future__ import annotations

import os
import stat

from minirun.fs.mountpoints import ensure_regular_file
from minirun.kernel import syscalls as k

# The minimal /dev: (name, major, minor), all mode 0666, as runc creates them.
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)


def populate_dev(dev: str, console_fd: int | None, *, confined: bool) -> None:
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
        ensure_regular_file(console)
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
