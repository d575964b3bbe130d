"""Reading back a tree a container (or an image archive) made: every entry, in byte order, with no
recursion, no absolute path and no symlink followed, so that any depth (past the recursion limit and
PATH_MAX) can be read with two descriptors. tree.py's docstring says why each step is made this way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from typing import NamedTuple

# A directory, opened relative to its parent's descriptor, never through a symlink.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Entry(NamedTuple):
    path: bytes  # relative to the root, starting with b"/"
    name: str
    stat: os.stat_result
    dir_fd: int  # the entry's directory: valid only until the walk goes on


class _WalkLevel(NamedTuple):
    path: bytes
    dev: int
    ino: int
    names: list[str]  # still to visit, in reverse order (pop() gives the next)


def walk(root: str) -> Iterator[Entry]:
    """Every entry under `root` (not the root itself), each directory's entries in byte order, a directory
    before its contents; without recursion and with two descriptors whatever the depth. Symlinks are
    reported, never followed."""
    fd = os.open(root, DIR_FLAGS)
    try:
        found = os.fstat(fd)
        levels = [_WalkLevel(b"", found.st_dev, found.st_ino, _listing(fd))]
        while levels:
            level = levels[-1]
            if not level.names:
                levels.pop()
                if levels:
                    parent_fd = os.open("..", DIR_FLAGS, dir_fd=fd)
                    parent = os.fstat(parent_fd)
                    if (parent.st_dev, parent.st_ino) != (levels[-1].dev, levels[-1].ino):
                        os.close(parent_fd)
                        raise OSError(errno.ESTALE, "the tree was moved while it was read", root)
                    os.close(fd)
                    fd = parent_fd
                continue
            name = level.names.pop()
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            path = level.path + b"/" + os.fsencode(name)
            yield Entry(path, name, st, fd)
            if stat.S_ISDIR(st.st_mode):
                child_fd = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child_fd
                levels.append(_WalkLevel(path, st.st_dev, st.st_ino, _listing(fd)))
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def _listing(fd: int) -> list[str]:
    return sorted(os.listdir(fd), key=os.fsencode, reverse=True)
