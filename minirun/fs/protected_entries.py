"""Entries a container protected against their removal: a directory chmod'ed 000 (given 0700 again,
without following a symlink), and the immutable / append-only attributes (`chattr +i` / `+a`), which no
chmod undoes and which a removal report must name with their fix.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct

_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# linux/fs.h: FS_IOC_GETFLAGS and the attributes `chattr +i` / `chattr +a` set.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IMMUTABLE_FL = 0x10
_FS_APPEND_FL = 0x20


def chmod_dir(parent_fd: int, name: str) -> bool:
    """Give directory `name` 0700 without following a symlink: through an O_PATH descriptor, since
    fchmodat(AT_SYMLINK_NOFOLLOW) is not supported on Linux (before 6.6)."""
    try:
        fd = os.open(name, _PATH_FLAGS, dir_fd=parent_fd)
    except OSError:
        return False
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        os.chmod(f"/proc/self/fd/{fd}", mode | 0o700)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def has_attributes(dir_fd: int, name: str) -> bool:
    """Whether `name` or its directory carries the immutable or append-only attribute."""
    for target in (name, "."):
        try:
            # Only files and directories: opening a device node or a FIFO could block or act.
            if not stat.S_ISREG(os.stat(target, dir_fd=dir_fd, follow_symlinks=False).st_mode) and target != ".":
                continue
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            continue
        try:
            # The kernel writes an int, whatever the ioctl number's "long" says.
            flags = struct.unpack_from("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 8))[0]
        except OSError:
            continue
        finally:
            os.close(fd)
        if flags & (_FS_IMMUTABLE_FL | _FS_APPEND_FL):
            return True
    return False
