"""An image archive's layers: each one checked before any is written (its media type, its digests, and the
room it takes once extracted), then applied through `archive.apply_layer`, which refuses anything that
would land outside the image root. Layers are plain tar or gzip (the content says which, as for Docker).
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import zlib
from typing import IO, Any, NamedTuple

from minirun.errors import ConfigError
from minirun.fs import archive, space
from minirun.fs.import_manifests import Layer, verify_digest
from minirun.fs.import_sources import CORRUPT_HINT, Source

_LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _Hashing:
    """A reader that hashes what passes through it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sha = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.sha.update(data)
        self.count += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


class Expansion(NamedTuple):
    """What the layers checked so far take once extracted."""

    bytes: int
    entries: int


def check(src: Source, layer: Layer, label: str, room: space.Room, before: Expansion) -> Expansion:
    """Refuse a layer before writing any of it: a blob that does not match its digest (checked on the blob
    as stored, before it is even decompressed), or one that would not fit. Its tar headers are read (and
    the uncompressed stream hashed for its diff_id) without extracting anything; reading stops as soon
    as the layers so far would not fit, so a decompression bomb costs only what fits."""
    _check_media_type(layer.media_type, label)
    with src.open(layer.path) as raw:
        if layer.digest:
            stored = _Hashing(raw)
            stored.drain()
            note = ""
            if layer.size is not None and stored.count != layer.size:
                shorter = "truncated" if stored.count < layer.size else "too long"
                note = f"; the blob is {shorter}: {stored.count} bytes where its descriptor says {layer.size}"
            verify_digest(label, stored.sha.hexdigest(), layer.digest, note)
            raw.seek(0)
        plain = _decompressed(raw, label)
        tar_stream = _Hashing(plain)
        size, entries = before
        try:
            with tarfile.open(fileobj=tar_stream, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    size += space.disk_bytes(member)
                    entries += 1
                    room.check(size, entries, f"the image (up to {label})")
            tar_stream.drain()
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ConfigError(f"{label}: truncated or malformed archive ({exc})", hint=CORRUPT_HINT) from exc
    if layer.diff_id:
        verify_digest(f"{label} (uncompressed)", tar_stream.sha.hexdigest(), layer.diff_id)
    return Expansion(size, entries)


def _check_media_type(media_type: str | None, label: str) -> None:
    if media_type and media_type.endswith("+zstd"):
        raise _zstd(label)
    if media_type and media_type not in _LAYER_TYPES:
        raise ConfigError(
            f'{label}: unsupported media type "{media_type}"', hint="minirun reads tar and tar+gzip layers"
        )


def _decompressed(raw: IO[bytes], label: str) -> Any:
    """The layer's tar stream: `raw` itself, or gunzipped (the content says which, as Docker's does)."""
    magic = raw.read(4)
    raw.seek(0)
    if magic == _ZSTD_MAGIC:
        raise _zstd(label)
    return gzip.GzipFile(fileobj=raw, mode="rb") if magic.startswith(_GZIP_MAGIC) else raw


def apply(src: Source, layer: Layer, root: str, label: str) -> int:
    _check_media_type(layer.media_type, label)
    with src.open(layer.path) as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic == _ZSTD_MAGIC:
            raise _zstd(label)
        stored = _Hashing(raw)
        plain = gzip.GzipFile(fileobj=stored, mode="rb") if magic.startswith(_GZIP_MAGIC) else stored
        tar_stream = _Hashing(plain)
        devices = archive.apply_layer(tar_stream, root, label)  # type: ignore[arg-type]
        try:
            # Both digests cover the whole blob, including whatever follows the tar's end-of-archive blocks.
            tar_stream.drain()
            stored.drain()
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ConfigError(f"{label}: truncated or malformed archive ({exc})", hint=CORRUPT_HINT) from exc
    if layer.digest:
        verify_digest(label, stored.sha.hexdigest(), layer.digest)
    if layer.diff_id:
        verify_digest(f"{label} (uncompressed)", tar_stream.sha.hexdigest(), layer.diff_id)
    return devices


def _zstd(label: str) -> ConfigError:
    return ConfigError(
        f"{label} is zstd-compressed, which minirun cannot read",
        hint="export the image with gzip or uncompressed layers (e.g. 'docker save', or skopeo without zstd)",
    )
