"""Staging dirs of the image store: where one build or import assembles its image before it is committed.

A staging dir is made and flocked by its writer under the store lock, so under the store lock a staging
dir nobody holds (and a temporary tag file, written only under it) is a dead writer's: the next command
that takes the lock removes it, however young it is (`kill -9` of an import, then the retry).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from typing import NamedTuple

from minirun import paths
from minirun.fs import tree
from minirun.fs.image_layout import STAGING_PREFIX, store_lock, tags_dir


class Stage(NamedTuple):
    dir: str  # the staging dir, removed whatever happens
    rootfs: str  # where the image's root filesystem is assembled


@contextlib.contextmanager
def staging() -> Iterator[Stage]:
    """A private directory inside the store for assembling one image; removed on the way out, whatever
    happens. Its flock, taken before the store lock is let go, tells `sweep_locked` in other processes
    that it is in use."""
    import tempfile

    os.makedirs(paths.images_dir(), mode=0o700, exist_ok=True)
    with store_lock():
        sweep_locked()
        directory = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=paths.images_dir())
        fd = -1
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new: nobody else can hold it
        except OSError:
            if fd >= 0:
                os.close(fd)
            os.rmdir(directory)
            raise
    try:
        rootfs = os.path.join(directory, "image", "rootfs")
        os.makedirs(rootfs)
        os.chmod(rootfs, 0o755)
        yield Stage(directory, rootfs)
    finally:
        try:
            discard(directory)
        finally:
            os.close(fd)


def sweep_locked() -> None:
    """Under the store lock: remove the staging dirs no live writer holds, and temporary tag files (see the
    module docstring)."""
    try:
        names = os.listdir(paths.images_dir())
    except FileNotFoundError:
        return
    for name in names:
        if not name.startswith(STAGING_PREFIX):
            continue
        path = os.path.join(paths.images_dir(), name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its writer is still at work
        finally:
            os.close(fd)
        discard(path, raise_errors=False)
    for directory, _dirs, files in os.walk(tags_dir()):
        for file in files:
            if file.startswith(".") and file.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, file))


def discard(directory: str, *, raise_errors: bool = True) -> bool:
    """Remove a staging dir (or an image renamed into one): iterative, whatever the image's depth. An
    entry that cannot go is reported (raised, or when sweeping: one warning line) and left for the next
    sweep; it never hides an image or blocks other commands."""
    removal = tree.remove_tree(directory)
    if removal.complete:
        return True
    if raise_errors:
        removal.check()
    error = tree.TreeNotRemoved(removal.root, removal.leftovers, removal.total)
    print(f"minirun: warning: {error}", file=sys.stderr)
    return False
