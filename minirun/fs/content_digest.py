"""The content digest of a root filesystem: what makes an image's ID the same when the same files are
built or imported again.
"""

from __future__ import annotations

import os
import stat

from minirun.fs import tree_walk


def tree_digest(root: str) -> tuple[str, int]:
    """A sha256 over every entry's path, type, mode, owner and content (not mtimes, so a rebuild of the same
    files has the same digest), and the tree's size in bytes (hardlinked files counted once)."""
    import hashlib

    digest = hashlib.sha256()
    contents: dict[tuple[int, int], str] = {}
    size = 0
    # Without recursion and relative to directory descriptors: an image may be deeper than the recursion
    # limit and than PATH_MAX.
    for entry in tree_walk.walk(root):
        st = entry.stat
        if stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key not in contents:
                contents[key] = _file_sha256(entry.dir_fd, entry.name)
                size += st.st_size
            detail = contents[key].encode()
        elif stat.S_ISLNK(st.st_mode):
            detail = os.fsencode(os.readlink(entry.name, dir_fd=entry.dir_fd))
        else:
            detail = b""
        digest.update(b"%s\0%o\0%d\0%d\0%s\n" % (entry.path, st.st_mode, st.st_uid, st.st_gid, detail))
    return f"sha256:{digest.hexdigest()}", size


def _file_sha256(dir_fd: int, name: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
