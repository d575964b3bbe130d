"""Where `minirun image import` reads an image from: the members of a tar by name (`docker save`, or an OCI
layout tarred), or an OCI layout directory. Nothing is extracted here: every path the archive's own
manifests name is checked to stay inside the archive, and every JSON document read is bounded in size.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import posixpath
import tarfile
import zlib
from collections.abc import Iterator
from typing import IO, Protocol

from minirun.errors import ConfigError, NotFound

CORRUPT_HINT = "the archive is incomplete or damaged; nothing was stored - export it again"
SOURCE_HINT = "give a 'docker save' tarball, an OCI image layout (directory or tar), or - to read stdin"


class Source(Protocol):
    def read(self, path: str) -> bytes: ...
    def open(self, path: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...
    def exists(self, path: str) -> bool: ...


def _inside(path: str) -> str:
    """A path named by the archive's own manifest, checked to stay inside the archive."""
    normal = posixpath.normpath(path)
    if path.startswith("/") or normal == ".." or normal.startswith("../"):
        raise ConfigError(f'the archive refers to "{path}", outside itself', hint=CORRUPT_HINT)
    return normal


def _missing(path: str) -> ConfigError:
    return ConfigError(f'the archive has no "{path}"', hint=CORRUPT_HINT)


# Manifests, indexes and configs are small (registries refuse manifests over 4 MiB); a bigger one is a bomb
# meant to fill the host's memory. The outer archive holds layers and a few JSON files, not a tree.
MAX_JSON_BYTES = 4 << 20
MAX_ARCHIVE_MEMBERS = 100_000


def _read_small(f: IO[bytes], path: str) -> bytes:
    data = f.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise ConfigError(
            f"{path} in the archive is over {MAX_JSON_BYTES >> 20} MiB, too big for an image's JSON", hint=CORRUPT_HINT
        )
    return data


class TarSource:
    """Reads members of a tar by name; never extracts them anywhere."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.members: dict[str, tarfile.TarInfo] = {}
        for member in tar:  # every header stays in memory (~700 bytes each): bounded, as a registry would
            if len(self.members) >= MAX_ARCHIVE_MEMBERS:
                raise ConfigError(
                    f"the archive has more than {MAX_ARCHIVE_MEMBERS} entries; nothing was stored",
                    hint="docker save and OCI layouts hold a few files besides their layers: is it an image?",
                )
            self.members[posixpath.normpath(member.name)] = member

    def _member(self, path: str) -> tarfile.TarInfo:
        path = _inside(path)
        for _hop in range(16):  # old docker save writes symlinks between layer dirs for shared layers
            member = self.members.get(path)
            if member is None:
                raise _missing(path)
            if member.issym():
                path = _inside(posixpath.join(posixpath.dirname(path), member.linkname))
            elif member.islnk():
                path = _inside(member.linkname)
            elif member.isreg():
                return member
            else:
                raise ConfigError(f'"{path}" in the archive is not a file', hint=CORRUPT_HINT)
        raise ConfigError(f'"{path}" in the archive is a loop of links', hint=CORRUPT_HINT)

    def exists(self, path: str) -> bool:
        return posixpath.normpath(path) in self.members

    def read(self, path: str) -> bytes:
        with self.open(path) as f:
            return _read_small(f, path)

    @contextlib.contextmanager
    def open(self, path: str) -> Iterator[IO[bytes]]:
        f = self.tar.extractfile(self._member(path))
        assert f is not None  # a regular member always has a file object
        with f:
            yield f


class DirSource:
    """An OCI layout directory."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)

    def _path(self, path: str) -> str:
        full = os.path.realpath(os.path.join(self.root, _inside(path)))
        if os.path.commonpath([full, self.root]) != self.root:
            raise ConfigError(f'"{path}" in the layout is a symlink out of it', hint=CORRUPT_HINT)
        return full

    def exists(self, path: str) -> bool:
        return os.path.isfile(self._path(path))

    def read(self, path: str) -> bytes:
        with self.open(path) as f:
            return _read_small(f, path)

    @contextlib.contextmanager
    def open(self, path: str) -> Iterator[IO[bytes]]:
        try:
            f = open(self._path(path), "rb")  # noqa: SIM115 - closed by the with below
        except (FileNotFoundError, IsADirectoryError):
            raise _missing(path) from None
        with f:
            yield f


@contextlib.contextmanager
def open_source(path: str) -> Iterator[Source]:
    if os.path.isdir(path):
        yield DirSource(path)
        return
    if not os.path.exists(path):
        raise NotFound(f'no such file or directory "{path}"', hint=SOURCE_HINT)
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the with below, once it is known to be a tar
        source = TarSource(tar)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ConfigError(f'cannot read "{path}": truncated or not a tar archive ({exc})', hint=SOURCE_HINT) from exc
    with tar:
        try:
            yield source
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ConfigError(f"truncated or malformed archive ({exc})", hint=CORRUPT_HINT) from exc
