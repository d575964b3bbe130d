"""Room on the data root: an import must not fill the filesystem minirun's images (and the host's other
data) live on. What a layer will take is known from its tar headers before a byte is extracted."""

from __future__ import annotations

import os
import tarfile

from minirun.errors import ConfigError, MinirunError

MIN_FREE_ENV = "MINIRUN_MIN_FREE_BYTES"
GIB = 1 << 30
# The free space an import always leaves: 5% of the filesystem, at most 1 GiB (5% alone would refuse every
# import on a 2 TB disk with less than 100 GB free; 1 GiB alone would refuse them all on a small disk).
MARGIN_FRACTION = 0.05
MARGIN_CAP = GIB
BLOCK = 4096  # what one directory, or the tail of a file, takes at least


def disk_bytes(member: tarfile.TarInfo) -> int:
    """What extracting `member` takes on disk, in whole blocks. A sparse member (GNU/pax sparse headers)
    takes only its data segments, which is how it is written; a plain file takes its full size (its zero
    runs are written as holes too, but the headers cannot tell)."""
    if member.isdir():
        return BLOCK
    if not member.isreg():
        return 0
    if member.sparse is not None:
        return sum(_blocks_spanned(offset, length) for offset, length in member.sparse)
    return _round_up(member.size)


def _blocks_spanned(offset: int, length: int) -> int:
    if length <= 0:
        return 0
    return _round_up(offset + length) - offset // BLOCK * BLOCK


def _round_up(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def margin(st: os.statvfs_result) -> int:
    value = os.environ.get(MIN_FREE_ENV)
    if value is not None and value != "":
        try:
            parsed = int(value)
        except ValueError:
            parsed = -1
        if parsed < 0:
            raise ConfigError(f'{MIN_FREE_ENV}="{value}" is not a byte count', hint="set it to a whole number >= 0")
        return parsed
    return min(MARGIN_CAP, int(st.f_blocks * st.f_frsize * MARGIN_FRACTION))


class Room:
    """How many bytes and inodes an import may still use on the filesystem of `directory`."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        st = os.statvfs(directory)
        self.margin = margin(st)
        self.free = st.f_bavail * st.f_frsize
        self.bytes = self.free - self.margin
        # Some filesystems (btrfs) report no inode count: then only bytes are checked.
        self.inodes = st.f_favail if st.f_files else None

    def check(self, needed_bytes: int, needed_inodes: int, what: str) -> None:
        if needed_bytes > self.bytes:
            raise MinirunError(
                f"{what} expands to at least {_size(needed_bytes)}, and {self.directory} has {_size(self.free)} "
                f"free of which minirun keeps {_size(self.margin)}; nothing was stored",
                hint=f"free space there, or set MINIRUN_DATA_DIR to a larger filesystem "
                f"({MIN_FREE_ENV} sets the margin)",
                code=1,
            )
        if self.inodes is not None and needed_inodes > self.inodes:
            raise MinirunError(
                f"{what} holds at least {needed_inodes} files, and {self.directory} has room for "
                f"{self.inodes} more; nothing was stored",
                hint="free inodes there, or set MINIRUN_DATA_DIR to a larger filesystem",
                code=1,
            )


def _size(count: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{max(count, 0)} bytes"
