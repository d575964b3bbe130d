"""Removing directory trees that a container (or an image archive) made: iterative and descriptor-relative.

Whatever a container can write, minirun must be able to delete and read back: trees deeper than Python's
recursion limit and than PATH_MAX (4096 bytes), directories chmod'ed 000, files made immutable, symlinks
pointing anywhere. So, like Go's os.RemoveAll (src/os/removeall_at.go):

- every step is relative to a directory descriptor opened with O_NOFOLLOW|O_DIRECTORY, so no absolute
  path is ever built and no symlink is ever followed (a symlink is unlinked, never its target);
- an explicit stack replaces recursion; only the identity (st_dev, st_ino) of each level is kept, and the
  walk climbs back with `openat(fd, "..")`, checking that it lands on the directory it came from, so it
  needs two descriptors whatever the depth;
- a directory it cannot read or write (chmod 000) is given 0700 and the walk goes on; what still cannot be
  removed (an immutable or append-only entry, a mount point) is reported, never raised half-way.

Reading a tree back, by the same rules, is tree_walk; the probes for entries a container protected
against removal (chmod 000, chattr +i / +a) are in protected_entries.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
from typing import NamedTuple

from minirun.errors import MinirunError
from minirun.fs.protected_entries import chmod_dir, has_attributes
from minirun.fs.tree_walk import DIR_FLAGS

_BATCH = 1024  # names read per pass over a directory, as Go's RemoveAll does
_MAX_REPORTED = 100  # leftovers listed in a report; the rest are counted


class Leftover(NamedTuple):
    """An entry the removal could not delete, and why."""

    path: str
    reason: str
    fix: str


class TreeNotRemoved(MinirunError):
    """Some entries of a tree could not be removed; `leftovers` lists them (the first few)."""

    def __init__(self, root: str, leftovers: list[Leftover], total: int) -> None:
        first = leftovers[0]
        more = f" (and {total - 1} more)" if total > 1 else ""
        super().__init__(f"cannot remove {short_path(first.path)}: {first.reason}{more}", hint=first.fix, code=1)
        self.root = root
        self.leftovers = leftovers
        self.total = total


class Removal(NamedTuple):
    """What `remove_tree` did: the entries it could not delete (at most _MAX_REPORTED) and their count."""

    root: str
    leftovers: list[Leftover]
    total: int

    @property
    def complete(self) -> bool:
        return self.total == 0

    def check(self) -> None:
        """Raise TreeNotRemoved unless everything went."""
        if self.total:
            raise TreeNotRemoved(self.root, self.leftovers, self.total)


def short_path(path: str, limit: int = 200) -> str:
    """A path fit for one line of a report and safe to paste into a shell: a container chose these names
    (a newline could forge a line of minirun's output, `; rm -rf ~` a command). Long ones (a 5000-level
    tree's path is 10 kB) keep their head and tail; unprintable characters are shown as \\xNN."""
    if len(path) > limit:
        path = f"{path[: limit // 2]}...{path[-limit // 2 :]}"
    return shlex.quote("".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in path))


class _Level(NamedTuple):
    name: str  # in its parent ("" for the root)
    dev: int
    ino: int
    failed: set[str]  # names in this directory already reported: skipped on the next pass


class _Remover:
    def __init__(self, root: str) -> None:
        self.root = root
        self.leftovers: list[Leftover] = []
        self.total = 0
        self.levels: list[_Level] = []
        self.current_fd = -1

    # --- reporting --------------------------------------------------------------------------------

    def path_of(self, name: str = "") -> str:
        parts = [level.name for level in self.levels[1:]]
        return os.path.join(self.root, *parts, name) if name else os.path.join(self.root, *parts)

    def report(self, name: str, reason: str, fix: str) -> None:
        self.total += 1
        if len(self.leftovers) < _MAX_REPORTED:
            self.leftovers.append(Leftover(self.path_of(name), reason, fix))
        if self.levels:
            self.levels[-1].failed.add(name)

    def report_error(self, dir_fd: int, name: str, exc: OSError) -> None:
        path = short_path(self.path_of(name))
        if exc.errno == errno.EPERM and has_attributes(dir_fd, name):
            self.report(
                name, "it is immutable or append-only", f"clear that with: chattr -i -a {path}; then run: minirun gc"
            )
        elif exc.errno == errno.EBUSY:
            self.report(name, "it is a mount point", f"unmount it with: umount {path}; then run: minirun gc")
        else:
            self.report(name, exc.strerror or str(exc), f"remove it by hand: rm -rf {path}; then run: minirun gc")

    # --- the walk ---------------------------------------------------------------------------------

    def run(self) -> Removal:
        parent_path, base = os.path.split(os.path.normpath(self.root))
        try:
            parent_fd = os.open(parent_path or ".", DIR_FLAGS)
        except FileNotFoundError:
            return Removal(self.root, [], 0)
        except OSError as exc:
            self.report_unexpected(exc)
            return Removal(self.root, self.leftovers, self.total)
        try:
            self.remove_entry(parent_fd, base)
        finally:
            os.close(parent_fd)
        return Removal(self.root, self.leftovers, self.total)

    def remove_entry(self, parent_fd: int, base: str) -> None:
        """Remove `base` in `parent_fd`; an error no step expected (EIO, ENOMEM...) ends the walk as a
        leftover where it happened, never as an exception: the caller's other work goes on."""
        try:
            self._remove_entry(parent_fd, base)
        except OSError as exc:
            self.report_unexpected(exc)

    def report_unexpected(self, exc: OSError) -> None:
        path = self.path_of()
        self.total += 1
        if len(self.leftovers) < _MAX_REPORTED:
            fix = f"remove it by hand ('rm -rf {short_path(path)}'), then run 'minirun gc'"
            self.leftovers.append(Leftover(path, exc.strerror or str(exc), fix))

    def _remove_entry(self, parent_fd: int, base: str) -> None:
        """Remove `base` in `parent_fd`: unlinked if it is not a directory, emptied then removed if it is."""
        try:
            found = os.stat(base, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(found.st_mode):
            self.unlink(parent_fd, base)
            return
        fd = self.open_dir(parent_fd, base)
        if fd is None:
            return
        self.levels.append(_Level("", found.st_dev, found.st_ino, set()))
        try:
            self.empty(fd, found.st_dev)
        except OSError as exc:
            self.report_unexpected(exc)  # while the levels still say where
            return
        finally:
            self.levels.clear()
        self.rmdir(parent_fd, base)

    def empty(self, fd: int, device: int) -> None:
        """Empty the directory `fd` (the root; closed here), descending without recursion."""
        try:
            self._empty(fd, device)
        finally:
            os.close(self.current_fd)

    def _empty(self, fd: int, device: int) -> None:
        self.current_fd = fd
        while True:
            child = self.clear_batch(fd)
            if child is not None:
                child_fd = self.open_dir(fd, child.name)
                if child_fd is None:
                    continue
                if child.dev != device:
                    os.close(child_fd)
                    self.report(
                        child.name,
                        "it is another filesystem's mount point",
                        f"unmount it with 'umount {short_path(self.path_of(child.name))}'",
                    )
                    continue
                os.close(fd)
                fd = self.current_fd = child_fd
                self.levels.append(child)
                continue
            if len(self.levels) == 1:
                return
            # This directory is as empty as it gets: climb to its parent, then remove it there.
            done = self.levels.pop()
            parent_fd = self.climb(fd)
            os.close(fd)
            fd = self.current_fd = parent_fd
            self.rmdir(fd, done.name)

    def clear_batch(self, fd: int) -> _Level | None:
        """Unlink the non-directories in `fd`, _BATCH names per pass; returns the first subdirectory met (to
        descend into), None when no entry but the ones already reported is left."""
        while True:
            names = self.read_batch(fd)
            if not names:
                return None
            for name, is_dir in names:
                if is_dir:
                    try:
                        found = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(found.st_mode):
                        return _Level(name, found.st_dev, found.st_ino, set())
                self.unlink(fd, name)

    def read_batch(self, fd: int) -> list[tuple[str, bool]]:
        """Up to _BATCH (name, is a directory) in `fd`, stopping after the first directory, skipping names
        already reported. Reading a directory while deleting from it is unspecified, so each pass starts
        over (the deleted names are gone by then)."""
        failed = self.levels[-1].failed
        names: list[tuple[str, bool]] = []
        with os.scandir(fd) as entries:  # of a dup of fd, rewound when closed
            for entry in entries:
                if entry.name in failed:
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                names.append((entry.name, is_dir))
                if is_dir or len(names) >= _BATCH:
                    break
        return names

    def climb(self, fd: int) -> int:
        """The parent of directory `fd`, checked to be the directory the walk came down from: if the tree
        was moved meanwhile, '..' is somewhere else, and the walk must not go on there."""
        parent_fd = os.open("..", DIR_FLAGS, dir_fd=fd)
        found = os.fstat(parent_fd)
        expected = self.levels[-1]
        if (found.st_dev, found.st_ino) != (expected.dev, expected.ino):
            os.close(parent_fd)
            raise MinirunError(
                f"{short_path(self.path_of())} was moved while it was being removed; nothing outside it was touched",
                hint="run 'minirun gc' again once nothing else moves it",
            )
        return parent_fd

    def open_dir(self, parent_fd: int, name: str) -> int | None:
        for attempt in range(2):
            try:
                return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
            except FileNotFoundError:
                return None
            except PermissionError as exc:
                if attempt == 0 and chmod_dir(parent_fd, name):
                    continue
                self.report_error(parent_fd, name, exc)
                return None
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # replaced by a file or symlink: unlink that
                    self.unlink(parent_fd, name)
                else:
                    self.report_error(parent_fd, name, exc)
                return None
        return None

    def make_accessible(self, fd: int) -> bool:
        """chmod 0700 the directory `fd` (a container may chmod 000 its own directories); True if it changed."""
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o700 == 0o700:
            return False
        try:
            os.fchmod(fd, mode | 0o700)
        except OSError:
            return False
        return True

    def unlink(self, dir_fd: int, name: str) -> None:
        for attempt in range(2):
            try:
                os.unlink(name, dir_fd=dir_fd)
                return
            except FileNotFoundError:
                return
            except IsADirectoryError:
                self.remove_nested(dir_fd, name)
                return
            except PermissionError as exc:
                if attempt == 0 and exc.errno == errno.EACCES and self.make_accessible(dir_fd):
                    continue
                self.report_error(dir_fd, name, exc)
                return
            except OSError as exc:
                self.report_error(dir_fd, name, exc)
                return

    def remove_nested(self, dir_fd: int, name: str) -> None:
        """A directory that appeared where a file was: remove it as a tree of its own."""
        nested = _Remover(self.path_of(name))
        nested.remove_entry(dir_fd, name)
        for leftover in nested.leftovers:
            self.report(name, leftover.reason, leftover.fix)
        self.total += max(0, nested.total - len(nested.leftovers))

    def rmdir(self, parent_fd: int, name: str) -> None:
        for attempt in range(2):
            try:
                os.rmdir(name, dir_fd=parent_fd)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY and self.total:
                    if self.levels:  # it holds what was already reported: do not descend into it again
                        self.levels[-1].failed.add(name)
                    return
                if attempt == 0 and exc.errno == errno.EACCES and self.make_accessible(parent_fd):
                    continue
                self.report_error(parent_fd, name, exc)
                return


def remove_tree(path: str) -> Removal:
    """Remove `path` and everything under it; "already gone" is success. Never follows a symlink (one in the
    tree is removed itself), never recurses, never raises for an entry it cannot remove: the returned
    Removal lists those (`.check()` raises TreeNotRemoved). Raises MinirunError only if the tree was moved
    while being walked."""
    return _Remover(path).run()


def remove_at(dir_fd: int, name: str) -> Removal:
    """remove_tree for the entry `name` of the directory `dir_fd`."""
    try:
        where = os.readlink(f"/proc/self/fd/{dir_fd}")  # for the report only
    except OSError:
        where = "."
    remover = _Remover(os.path.join(where, name))
    remover.remove_entry(dir_fd, name)
    return Removal(remover.root, remover.leftovers, remover.total)
