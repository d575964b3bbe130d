"""Apply one layer (an uncompressed tar stream) onto a rootfs directory, as a container runtime does:
whiteouts honoured, modes, owners and mtimes kept, and nothing a hostile archive holds can reach outside
the root.

tarfile's own extract() trusts the archive's paths and links. Here every entry is created relative to a
directory descriptor reached one component at a time with O_NOFOLLOW, so a symlink already in the rootfs
(`evil -> /tmp`, then `evil/pwned`) is refused instead of followed, and link targets are checked lexically
before the link is made. Symlinks are stored as they are (an absolute one means the image's own root) and
never followed while extracting.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Iterator
from typing import IO

from minirun.errors import ConfigError, MinirunError
from minirun.fs import tree
from minirun.fs.tree_walk import DIR_FLAGS

# The OCI layer spec's whiteouts (inherited from aufs): `.wh.NAME` hides NAME of the layers below,
# `.wh..wh..opq` hides everything the layers below put in its directory.
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_META_WHITEOUT = ".wh..wh."  # other aufs bookkeeping (.wh..wh.plnk, ...): not content

_UNSAFE_HINT = "the archive is unsafe; nothing was stored - only import images from sources you trust"
_DAMAGED_HINT = "the archive is incomplete or damaged; nothing was stored - export it again"
_CHUNK = 1 << 20
_BLOCK = 4096  # holes are made of whole filesystem blocks
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _Refused(Exception):
    """An entry that must not be applied; becomes a ConfigError naming the layer and the entry."""


def apply_layer(stream: IO[bytes], root: str, label: str) -> int:
    """Apply the tar read from `stream` onto the directory `root`; returns how many device nodes were skipped.

    Raises ConfigError naming `label` (e.g. "layer 2") and the entry for an unsafe, truncated or malformed
    archive; the caller discards the half-applied root."""
    applier = _Applier(root)
    name = ""
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = member.name
                applier.apply(tar, member)
        applier.finish()
    except _Refused as exc:
        raise ConfigError(f'{label}: entry "{name}" {exc}', hint=_UNSAFE_HINT) from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        where = f' at entry "{name}"' if name else ""
        raise ConfigError(f"{label}: truncated or malformed archive{where} ({exc})", hint=_DAMAGED_HINT) from exc
    except OSError as exc:
        raise MinirunError(f'{label}: cannot write entry "{name}": {exc.strerror or exc}') from exc
    finally:
        applier.close()
    return applier.devices


def relative_path(name: str) -> str:
    """The entry's path inside the root ("" for the root itself); refuses absolute and escaping paths."""
    if name.startswith("/"):
        raise _Refused("is an absolute path")
    path = posixpath.normpath(name)
    if path == ".." or path.startswith("../"):
        raise _Refused("escapes the image root")
    return "" if path == "." else path


def link_target_inside(entry: str, target: str) -> bool:
    """Whether symlink `entry` -> `target`, resolved lexically in the image (an absolute target starts at
    the image's own root), stays inside it."""
    parts = [] if target.startswith("/") else entry.split("/")[:-1]
    for part in target.split("/"):
        if part == "..":
            if not parts:
                return False
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return True


class _Applier:
    def __init__(self, root: str) -> None:
        self.root_fd = os.open(root, DIR_FLAGS)
        self.devices = 0
        # Paths this layer created: an opaque whiteout hides only what the layers below put there.
        self.fresh: set[str] = set()
        # Directory mtimes are set last: creating their children would change them again.
        self.dir_times: list[tuple[str, float]] = []
        # The directory opened last (its path's parts, a descriptor): the next entry is nearly always in
        # it or next to it, and walking every path from the root costs depth^2 opens on a deep archive.
        self.near: tuple[list[str], int] | None = None

    def close(self) -> None:
        self._forget_near()
        os.close(self.root_fd)

    def _forget_near(self) -> None:
        """Called before anything is removed: the remembered directory must never be a deleted one."""
        if self.near is not None:
            os.close(self.near[1])
            self.near = None

    def apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        path = relative_path(member.name)
        if not path:
            return  # "./" itself: the root keeps its own mode and owner
        parent, base = posixpath.split(path)
        if base.startswith(WHITEOUT):
            try:
                with self._open_dir(parent, create=False) as dir_fd:
                    self._whiteout(dir_fd, parent, base)
            except FileNotFoundError:
                pass  # nothing below to hide
            return
        if member.ischr() or member.isblk():
            self.devices += 1  # a container gets its own /dev; image device nodes are never needed
            return
        with self._open_dir(parent, create=True) as dir_fd:
            existing = _lstat(dir_fd, base)
            if existing is not None and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
                self._forget_near()
                _remove(dir_fd, base)
            self._create(tar, member, dir_fd, base, path)
            self.fresh.add(path)

    def finish(self) -> None:
        for path, mtime in reversed(self.dir_times):
            with contextlib.suppress(OSError, _Refused), self._open_dir(path, create=False) as fd:
                os.utime(fd, (mtime, mtime))

    def _create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, dir_fd: int, base: str, path: str) -> None:
        mode = member.mode & 0o7777
        if member.isdir():
            with contextlib.suppress(FileExistsError):
                os.mkdir(base, 0o700, dir_fd=dir_fd)
            fd = os.open(base, DIR_FLAGS, dir_fd=dir_fd)
            try:
                _own(fd, member, mode)
            finally:
                os.close(fd)
            self.dir_times.append((path, member.mtime))
        elif member.isreg():
            fd = os.open(base, _NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
            try:
                source = tar.extractfile(member)
                if source is not None:
                    write_sparse(source, fd)
                _own(fd, member, mode)
                os.utime(fd, (member.mtime, member.mtime))
            finally:
                os.close(fd)
        elif member.issym():
            if not link_target_inside(path, member.linkname):
                raise _Refused(f'is a symlink to "{member.linkname}", which escapes the image root')
            os.symlink(member.linkname, base, dir_fd=dir_fd)
            os.chown(base, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
            os.utime(base, (member.mtime, member.mtime), dir_fd=dir_fd, follow_symlinks=False)
        elif member.islnk():
            self._hardlink(member.linkname, dir_fd, base)
        elif member.isfifo():
            os.mkfifo(base, 0o600, dir_fd=dir_fd)
            # Just created in a private staging tree, so `base` is this FIFO and not a symlink.
            os.chown(base, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
            os.chmod(base, mode, dir_fd=dir_fd)
            os.utime(base, (member.mtime, member.mtime), dir_fd=dir_fd, follow_symlinks=False)
        else:
            raise _Refused(f"has an unsupported type ({member.type!r})")

    def _hardlink(self, linkname: str, dir_fd: int, base: str) -> None:
        # Hardlink names are archive paths (relative to the root), never host paths.
        if linkname.startswith("/") or posixpath.normpath(linkname).split("/")[0] == "..":
            raise _Refused(f'is a hardlink to "{linkname}", which is outside the image root')
        target = posixpath.normpath(linkname)
        target_dir, target_base = posixpath.split(target)
        try:
            with self._open_dir(target_dir, create=False) as target_fd:
                found = _lstat(target_fd, target_base)
                if found is None or not stat.S_ISREG(found.st_mode):
                    raise _Refused(f'is a hardlink to "{linkname}", which is not a regular file in the image')
                os.link(target_base, base, src_dir_fd=target_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise _Refused(f'is a hardlink to "{linkname}", which is not a regular file in the image') from None
        except _Refused as exc:
            if str(exc).startswith("is a hardlink"):
                raise
            raise _Refused(f'is a hardlink to "{linkname}", which {exc}') from None

    def _whiteout(self, dir_fd: int, parent: str, base: str) -> None:
        self._forget_near()
        if base == OPAQUE:
            self._clear_lower(parent)
        elif not base.startswith(_META_WHITEOUT):
            hidden = base[len(WHITEOUT) :]
            if hidden in ("", ".", ".."):
                raise _Refused("is a whiteout of nothing")
            _remove(dir_fd, hidden)

    def _clear_lower(self, path: str) -> None:
        """Remove what the layers below put in directory `path`, keeping what this layer made (at any
        depth: a work list, not recursion, since an archive can nest thousands of directories)."""
        pending = [path]
        while pending:
            directory = pending.pop()
            with self._open_dir(directory, create=False) as dir_fd:
                for name in os.listdir(dir_fd):
                    child = posixpath.join(directory, name) if directory else name
                    if child not in self.fresh:
                        self._forget_near()
                        _remove(dir_fd, name)
                        continue
                    found = _lstat(dir_fd, name)
                    if found is not None and stat.S_ISDIR(found.st_mode):
                        pending.append(child)

    @contextlib.contextmanager
    def _open_dir(self, path: str, *, create: bool) -> Iterator[int]:
        """A descriptor for directory `path` inside the root, reached without following any symlink;
        missing directories are made (0755, as Docker makes them) when `create`."""
        parts = path.split("/") if path else []
        fd, done = self._start(parts)
        walked = "/".join(parts[:done])
        try:
            for part in parts[done:]:
                walked = posixpath.join(walked, part) if walked else part
                try:
                    next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    self.fresh.add(walked)
                    next_fd = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    found = _lstat(fd, part)
                    if found is not None and stat.S_ISLNK(found.st_mode):
                        raise _Refused(f'goes through the symlink "{walked}"') from None
                    if found is not None:
                        raise _Refused(f'goes through "{walked}", which is not a directory') from None
                    raise exc
                os.close(fd)
                fd = next_fd
            self._forget_near()
            self.near = (parts, os.dup(fd))
            yield fd
        finally:
            os.close(fd)

    def _start(self, parts: list[str]) -> tuple[int, int]:
        """Where a walk to `parts` starts: a descriptor, and how many of `parts` it already reached. From
        the directory opened last when that is closer than the root, climbing its '..' (the tree is this
        import's private staging tree, and nothing was removed since: see _forget_near)."""
        if self.near is None:
            return os.dup(self.root_fd), 0
        near_parts, near_fd = self.near
        common = 0
        for have, want in zip(near_parts, parts, strict=False):
            if have != want:
                break
            common += 1
        up = len(near_parts) - common
        if up >= common:
            return os.dup(self.root_fd), 0
        fd = os.dup(near_fd)
        for _ in range(up):
            parent = os.open("..", DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
        return fd, common


def write_sparse(source: IO[bytes], fd: int) -> int:
    """Copy `source` into the new, empty file `fd`, leaving every all-zero block a hole (as `tar --sparse`
    and `cp --sparse=always` do): a sparse member (tarfile reads its holes back as zeros) or a plain file of
    zeros takes no more disk than its data. Returns the size written."""
    offset = 0
    while chunk := source.read(_CHUNK):
        if chunk.count(0) != len(chunk):
            _write_data_blocks(fd, chunk, offset)
        offset += len(chunk)
    os.ftruncate(fd, offset)  # the file's size, holes at its end included
    return offset


def _write_data_blocks(fd: int, chunk: bytes, offset: int) -> None:
    """Write the runs of `chunk` that are not all-zero blocks, at their offsets."""
    view = memoryview(chunk)
    run_start = None
    for start in range(0, len(chunk), _BLOCK):
        end = min(start + _BLOCK, len(chunk))
        zero = chunk.count(0, start, end) == end - start
        if not zero and run_start is None:
            run_start = start
        elif zero and run_start is not None:
            _pwrite_all(fd, view[run_start:start], offset + run_start)
            run_start = None
    if run_start is not None:
        _pwrite_all(fd, view[run_start:], offset + run_start)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _own(fd: int, member: tarfile.TarInfo, mode: int) -> None:
    # chown first: it clears setuid and setgid bits, which the chmod then restores.
    os.fchown(fd, member.uid, member.gid)
    os.fchmod(fd, mode)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(dir_fd: int, name: str) -> None:
    found = _lstat(dir_fd, name)
    if found is None:
        return
    if stat.S_ISDIR(found.st_mode):
        # Iterative and descriptor-relative: never follows a symlink out, whatever the depth.
        tree.remove_at(dir_fd, name).check()
    else:
        os.unlink(name, dir_fd=dir_fd)
