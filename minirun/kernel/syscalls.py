"""ctypes wrappers for the namespace and mount syscalls.

Python 3.11 (Debian 12's) has no os.unshare/os.setns, so these go through libc. Every wrapper raises
OSError(errno, "<syscall>(<args>)") so the layers above can add which object and why.

Man pages: https://man7.org/linux/man-pages/man2/unshare.2.html,
https://man7.org/linux/man-pages/man2/setns.2.html, https://man7.org/linux/man-pages/man2/mount.2.html,
https://man7.org/linux/man-pages/man2/prctl.2.html
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_STRICTATIME = 1 << 24

MNT_DETACH = 2

# mount_setattr(2) (Linux 5.12): change the per-mount flags of a whole tree in one call.
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
# Syscalls from 424 on have one number on every architecture (include/uapi/asm-generic/unistd.h).
_SYS_MOUNT_SETATTR = 442

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

_FLAG_NAMES = {
    CLONE_NEWNS: "CLONE_NEWNS",
    CLONE_NEWCGROUP: "CLONE_NEWCGROUP",
    CLONE_NEWUTS: "CLONE_NEWUTS",
    CLONE_NEWIPC: "CLONE_NEWIPC",
    CLONE_NEWUSER: "CLONE_NEWUSER",
    CLONE_NEWPID: "CLONE_NEWPID",
    CLONE_NEWNET: "CLONE_NEWNET",
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def flag_names(flags: int) -> str:
    """Render CLONE_* bits the way strace does: CLONE_NEWNET|CLONE_NEWUTS."""
    return "|".join(name for bit, name in _FLAG_NAMES.items() if flags & bit) or "0"


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """unshare(2): move the calling process (or its future children, for CLONE_NEWPID) to new namespaces."""
    _check(_libc.unshare(flags), f"unshare({flag_names(flags)})")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace that `fd` (an nsfs file) refers to."""
    _check(_libc.setns(fd, nstype), f"setns({flag_names(nstype)})")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """mount(2)."""

    def enc(value: str | None) -> bytes | None:
        return value.encode() if value is not None else None

    _check(
        _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
        f"mount({source!r}, {target!r}, {fstype!r})",
    )


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(target.encode(), flags), f"umount2({target!r})")


# glibc has no pivot_root() wrapper.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2): make `new_root` the root of the calling process's mount namespace."""
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"pivot_root: unsupported architecture {os.uname().machine}")
    result = _libc.syscall(ctypes.c_long(number), new_root.encode(), put_old.encode())
    _check(0 if result == 0 else -1, f"pivot_root({new_root!r}, {put_old!r})")


class _MountAttr(ctypes.Structure):
    _fields_ = [  # struct mount_attr (include/uapi/linux/mount.h)
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def mount_setattr_recursive(path: str, attr_set: int) -> None:
    """mount_setattr(2) with AT_RECURSIVE: set MOUNT_ATTR_* on the mount at `path` and every mount below
    it, hidden (over-mounted) ones included, atomically: all of them change or none does."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    result = _libc.syscall(
        ctypes.c_long(_SYS_MOUNT_SETATTR),
        ctypes.c_int(_AT_FDCWD),
        path.encode(),
        ctypes.c_uint(_AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(0 if result == 0 else -1, f"mount_setattr({path!r}, AT_RECURSIVE)")


def sethostname(name: str) -> None:
    """sethostname(2) for the calling process's UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname({name!r})")


def set_child_subreaper() -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are re-parented to us instead of to init."""
    _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")


def set_dumpable(dumpable: bool) -> None:
    """prctl(PR_SET_DUMPABLE): a non-dumpable process's /proc/PID files belong to root and ptrace access to
    it needs CAP_SYS_PTRACE. execve() resets it (to dumpable, for an ordinary program)."""
    _check(_libc.prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def set_parent_death_signal(signum: int) -> None:
    """prctl(PR_SET_PDEATHSIG): the kernel sends `signum` when the thread that forked us dies."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
