"""A detached container's log: its stdout and stderr bytes exactly as written, in a file capped at
`max-size` that rotates into at most `max-file` files, as Docker's json-file driver does
(https://docs.docker.com/engine/logging/drivers/json-file/) but without the JSON: the bytes are raw, so
the driver is named "minirun-raw", not "json-file".

The newest file is PATH; rotation renames PATH -> PATH.1 -> ... -> PATH.(max-file - 1) and drops the
oldest, then opens a new PATH. Readers open the files newest first and skip one seen twice (a rotation
between two opens renames a file they already hold), then read oldest first: always in order.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from minirun.errors import ConfigError

DRIVER = "minirun-raw"
# Docker's own default is unlimited; a log that can fill the disk is not a sane default. 10m x 3 is the
# cap Docker's documentation recommends for json-file (30 MiB per container at most).
DEFAULT_MAX_SIZE = "10m"
DEFAULT_MAX_FILE = "3"
MAX_FILES_LIMIT = 100
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}  # go-units RAMInBytes: binary, as Docker's
CHUNK = 1 << 16
MIN_MAX_SIZE = 4 << 10


class LogOptions(NamedTuple):
    max_size: str = DEFAULT_MAX_SIZE  # as given ("10m"), for inspect
    max_file: str = DEFAULT_MAX_FILE
    max_bytes: int = 10 << 20
    max_files: int = 3

    def as_record(self) -> dict[str, str]:
        return {"max-size": self.max_size, "max-file": self.max_file}


def parse_size(text: str) -> int:
    match = _SIZE.match(text.strip())
    if not match:
        raise ConfigError(
            f'invalid --log-opt max-size "{text}"', hint="give a positive size with k, m or g, e.g. max-size=10m"
        )
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise ConfigError(f'invalid --log-opt max-size "{text}": must be positive', hint="e.g. max-size=10m")
    if size < MIN_MAX_SIZE:
        # Each rotation renames every kept file, in the supervisor's loop: a log smaller than a few pipe
        # reads would rotate on nearly every read and slow every container's log and DNS.
        raise ConfigError(f'invalid --log-opt max-size "{text}": the least is 4k', hint="e.g. max-size=10m")
    return size


def parse_options(values: list[str] | tuple[str, ...]) -> LogOptions:
    """`--log-opt KEY=VALUE` (repeatable; also KEY=VALUE,KEY=VALUE). Each key not given takes minirun's
    default; max-file without max-size is refused, as Docker refuses it."""
    given: dict[str, str] = {}
    for value in values:
        for item in filter(None, value.split(",")):
            key, sep, option = item.partition("=")
            if not sep or not key:
                raise ConfigError(f'invalid --log-opt "{item}"', hint="use KEY=VALUE, e.g. --log-opt max-size=10m")
            if key not in ("max-size", "max-file"):
                raise ConfigError(
                    f'unknown log opt "{key}" for the {DRIVER} log driver', hint="the options are max-size and max-file"
                )
            given[key] = option
    if "max-file" in given and "max-size" not in given:
        raise ConfigError("--log-opt max-file needs max-size", hint="add e.g. --log-opt max-size=10m")
    max_size = given.get("max-size", DEFAULT_MAX_SIZE)
    max_file = given.get("max-file", DEFAULT_MAX_FILE)
    if not max_file.isdigit() or not 1 <= int(max_file) <= MAX_FILES_LIMIT:
        raise ConfigError(
            f'invalid --log-opt max-file "{max_file}"', hint=f"give a whole number from 1 to {MAX_FILES_LIMIT}"
        )
    return LogOptions(max_size, max_file, parse_size(max_size), int(max_file))


def from_record(config: dict[str, str] | None) -> LogOptions:
    """The options a record names; a record from before logs were capped has one unlimited file."""
    if not config:
        return LogOptions("-1", "1", 0, 1)
    return parse_options([f"max-size={config['max-size']}", f"max-file={config['max-file']}"])


def rotated(path: str, index: int) -> str:
    return path if index == 0 else f"{path}.{index}"


class RotatingWriter:
    """Appends to PATH, rotating before a write would take it past max_bytes (0: never). A write that
    fails (disk full, directory removed) drops those bytes: the container must never block on its log."""

    def __init__(self, path: str, options: LogOptions, *, create: bool = True) -> None:
        """With create=False PATH must exist: a container removed before its relay started stays removed."""
        self.path = path
        self.options = options
        self.fd = -1
        self.size = 0
        self.failed = False
        self._open(os.O_CREAT if create else 0)

    def _open(self, create: int = os.O_CREAT) -> None:
        try:
            self.fd = os.open(self.path, os.O_WRONLY | create | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            self.size = os.fstat(self.fd).st_size
        except OSError:
            self.fd = -1
            self.failed = True

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.fd >= 0:
            limit = self.options.max_bytes
            if limit and self.size >= limit:
                # Whole files' worth of this write beyond the last max_files would each be rotated in only
                # to be rotated out again: skip them (the files left are the same, the renames are not).
                excess = -(-len(view) // limit) - self.options.max_files
                if excess > 0:
                    view = view[excess * limit :]
                self.rotate()
                if self.size >= limit:  # could not rotate (e.g. a read-only disk): drop, never spin
                    self.failed = True
                    return
                continue
            part = view[: limit - self.size] if limit else view
            try:
                written = os.write(self.fd, part)
            except OSError:
                self.failed = True
                return
            self.size += written
            view = view[written:]

    def rotate(self) -> None:
        self.close()
        with contextlib.suppress(OSError):
            if self.options.max_files == 1:
                os.unlink(self.path)
            for index in range(self.options.max_files - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(rotated(self.path, index - 1), rotated(self.path, index))
        self._open()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def open_all(path: str, max_files: int) -> list[int]:
    """Fds of the log's files, oldest first, each file once (see the module's docstring)."""
    opened: list[int] = []
    seen: set[tuple[int, int]] = set()
    for index in range(max_files):
        try:
            fd = os.open(rotated(path, index), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        identity = _identity(fd)
        if identity in seen:
            os.close(fd)
            continue
        seen.add(identity)
        opened.append(fd)
    return opened[::-1]


def read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def tail_lines(data: bytes, tail: int | None) -> bytes:
    if tail is None:
        return data
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-tail:]) if tail > 0 else b""


def read(path: str, options: LogOptions, tail: int | None = None) -> bytes:
    fds = open_all(path, options.max_files)
    try:
        return tail_lines(b"".join(read_fd(fd) for fd in fds), tail)
    finally:
        for fd in fds:
            os.close(fd)


def follow(path: str, options: LogOptions, tail: int | None, finished: Callable[[], bool]) -> Iterator[bytes]:
    """The log so far (or its last `tail` lines), then what is written, across rotations, until
    `finished()` (checked only once everything written so far was read)."""
    fds = open_all(path, options.max_files)
    current = fds.pop() if fds else -1
    try:
        yield tail_lines(b"".join(read_fd(fd) for fd in fds) + (read_fd(current) if current >= 0 else b""), tail)
    finally:
        for fd in fds:
            os.close(fd)
    final = False  # finished() said so: one more pass takes what was written (and rotated) before that
    try:
        while True:
            chunk = read_fd(current) if current >= 0 else b""
            if chunk:
                yield chunk
                continue
            newer = _newer_files(path, current, options.max_files)
            if newer is not None:
                # Rotated: the writer renamed our file and moved on, so what it holds is complete now.
                if current >= 0:
                    yield read_fd(current)
                    os.close(current)
                for fd in newer[:-1]:
                    yield read_fd(fd)
                    os.close(fd)
                current = newer[-1]
                continue
            if final:
                return
            final = finished()
            if not final:
                time.sleep(0.05)
    finally:
        if current >= 0:
            os.close(current)


def _newer_files(path: str, current: int, max_files: int) -> list[int] | None:
    """None while PATH is still the file we read; else the files written after ours, oldest first, the
    newest (PATH) last. Files rotated out of reach meanwhile are lost, as with Docker's follower."""
    try:
        newest = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    if current >= 0 and _identity(newest) == _identity(current):
        os.close(newest)
        return None
    newer = [newest]
    if current >= 0:
        mine = _identity(current)
        for index in range(1, max_files):
            try:
                fd = os.open(rotated(path, index), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:
                break
            if _identity(fd) == mine:
                os.close(fd)
                break
            newer.append(fd)
    return newer[::-1]
