"""`minirun image import`: `docker save` tarballs and OCI image layouts (a directory, or a tar of one).

Both formats name a config blob and an ordered list of layer tars (plain or gzip). Docker >= 25 writes an
OCI layout and a manifest.json into the same tarball; manifest.json is read first since it carries the
RepoTags. Every blob whose digest is known (its descriptor, its `blobs/sha256/<hex>` name, the config's
rootfs.diff_ids for the uncompressed layers) is checked, and the layers go through `archive.apply_layer`,
which refuses anything that would land outside the image root.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import platform
import posixpath
import re
import sys
import tarfile
import zlib
from collections.abc import Iterator
from typing import IO, Any, NamedTuple, Protocol

from minirun.errors import ConfigError, MinirunError, NotFound
from minirun.fs import archive, images, space

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}
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
_BLOB_PATH = re.compile(r"(?:^|.*/)blobs/sha256/([0-9a-f]{64})|([0-9a-f]{64})\.json")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le"}

_CORRUPT_HINT = "the archive is incomplete or damaged; nothing was stored - export it again"
_SOURCE_HINT = "give a 'docker save' tarball, an OCI image layout (directory or tar), or - to read stdin"


class Layer(NamedTuple):
    path: str  # inside the archive
    media_type: str | None  # None in a docker save manifest: the content says
    digest: str | None  # sha256:<hex> of the blob as stored
    diff_id: str | None  # sha256:<hex> of the uncompressed tar
    size: int | None = None  # bytes of the blob as stored, when a descriptor gives it


class Plan(NamedTuple):
    name: str | None
    config: dict[str, Any]  # Docker's field names: Env, Cmd, Entrypoint, WorkingDir, User
    layers: list[Layer]


class Source(Protocol):
    def read(self, path: str) -> bytes: ...
    def open(self, path: str) -> contextlib.AbstractContextManager[IO[bytes]]: ...
    def exists(self, path: str) -> bool: ...


def import_image(source: str, name: str | None, used_by: images.UsedBy) -> tuple[images.Image, int]:
    """Import FILE, a directory or "-" (stdin) and store it as `name` (else the name the archive gives).
    Returns the image and how many device nodes its layers held (skipped: a container gets its own /dev)."""
    wanted = images.normalize_name(name) if name else None
    with images.staging() as stage:
        path = _spool_stdin(stage.dir) if source == "-" else source
        with open_source(path) as src:
            plan = read_plan(src, wanted)
            stored_name = _name_for(plan.name)
            # Every layer is checked before any is written: its digests, and whether what its headers
            # say it expands to leaves the data root its margin of free space.
            room = space.Room(stage.dir)
            needed = Expansion(0, 0)
            for number, layer in enumerate(plan.layers, 1):
                needed = _check(src, layer, f"layer {number}", room, needed)
            devices = 0
            for number, layer in enumerate(plan.layers, 1):
                devices += _apply(src, layer, stage.rootfs, f"layer {number}")
        what = "stdin" if source == "-" else os.path.abspath(source)
        return images.commit(stage, stored_name, plan.config, used_by, f"import {what}"), devices


def _name_for(name: str | None) -> str:
    if not name:
        raise ConfigError("the archive does not name its image", hint="name it with --name NAME[:TAG]")
    try:
        return images.normalize_name(name)
    except ConfigError:
        raise ConfigError(
            f'the archive names its image "{name}", which is not a valid name', hint="name it with --name NAME[:TAG]"
        ) from None


def _spool_stdin(directory: str) -> str:
    """stdin can be read only once and not seeked; the importer needs both. The copy stops where it would
    eat into the data root's free-space margin (the disk containers write to as well)."""
    path = os.path.join(directory, "stdin.tar")
    room = space.Room(directory)
    written = 0
    try:
        with open(path, "wb") as out:
            while chunk := sys.stdin.buffer.read(1 << 20):
                written += len(chunk)
                room.check(written, 1, "the archive on stdin")
                out.write(chunk)
    except OSError as exc:
        raise MinirunError(
            f"cannot keep the archive read from stdin in {directory}: {exc.strerror}; nothing was stored",
            hint="free space there, or import from a file: minirun image import FILE",
            code=1,
        ) from None
    return path


# --- sources -------------------------------------------------------------------------------------------


def _inside(path: str) -> str:
    """A path named by the archive's own manifest, checked to stay inside the archive."""
    normal = posixpath.normpath(path)
    if path.startswith("/") or normal == ".." or normal.startswith("../"):
        raise ConfigError(f'the archive refers to "{path}", outside itself', hint=_CORRUPT_HINT)
    return normal


def _missing(path: str) -> ConfigError:
    return ConfigError(f'the archive has no "{path}"', hint=_CORRUPT_HINT)


# Manifests, indexes and configs are small (registries refuse manifests over 4 MiB); a bigger one is a bomb
# meant to fill the host's memory. The outer archive holds layers and a few JSON files, not a tree.
MAX_JSON_BYTES = 4 << 20
MAX_ARCHIVE_MEMBERS = 100_000


def _read_small(f: IO[bytes], path: str) -> bytes:
    data = f.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise ConfigError(
            f"{path} in the archive is over {MAX_JSON_BYTES >> 20} MiB, too big for an image's JSON", hint=_CORRUPT_HINT
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
                raise ConfigError(f'"{path}" in the archive is not a file', hint=_CORRUPT_HINT)
        raise ConfigError(f'"{path}" in the archive is a loop of links', hint=_CORRUPT_HINT)

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
            raise ConfigError(f'"{path}" in the layout is a symlink out of it', hint=_CORRUPT_HINT)
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
        raise NotFound(f'no such file or directory "{path}"', hint=_SOURCE_HINT)
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the with below, once it is known to be a tar
        source = TarSource(tar)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ConfigError(f'cannot read "{path}": truncated or not a tar archive ({exc})', hint=_SOURCE_HINT) from exc
    with tar:
        try:
            yield source
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ConfigError(f"truncated or malformed archive ({exc})", hint=_CORRUPT_HINT) from exc


# --- manifests -----------------------------------------------------------------------------------------


def read_plan(src: Source, wanted: str | None) -> Plan:
    """What to import from `src`: its name, runtime config and layers in order."""
    if src.exists("manifest.json"):
        return _docker_plan(src, wanted)
    if src.exists("index.json"):
        return _oci_plan(src, wanted)
    raise ConfigError(
        "not an image archive: it has neither manifest.json (docker save) nor index.json (OCI layout)",
        hint=_SOURCE_HINT,
    )


def _json(src: Source, path: str, digest: str | None = None) -> Any:
    data = src.read(path)
    if digest:
        _verify(path, hashlib.sha256(data).hexdigest(), digest)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc})", hint=_CORRUPT_HINT) from exc


def _verify(what: str, actual_hex: str, expected: str, note: str = "") -> None:
    if f"sha256:{actual_hex}" != expected:
        raise ConfigError(
            f"{what}: content does not match its digest (expected {expected}, got sha256:{actual_hex}){note}",
            hint=_CORRUPT_HINT,
        )


def _digest_in_path(path: str) -> str | None:
    match = _BLOB_PATH.fullmatch(posixpath.normpath(path))
    return f"sha256:{match.group(1) or match.group(2)}" if match else None


def _field(document: Any, key: str, kind: type, where: str) -> Any:
    value = document.get(key) if isinstance(document, dict) else None
    if not isinstance(value, kind):
        raise ConfigError(f'{where}: "{key}" is missing or not a {kind.__name__}', hint=_CORRUPT_HINT)
    return value


def _runtime_config(config: Any, where: str) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise ConfigError(f"{where} is not a JSON object", hint=_CORRUPT_HINT)
    runtime = config.get("config") or {}
    if not isinstance(runtime, dict):
        raise ConfigError(f'{where}: "config" is not a JSON object', hint=_CORRUPT_HINT)
    found = {key: runtime.get(key) for key in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User")}
    for key in ("Env", "Cmd", "Entrypoint"):
        value = found[key]
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f'{where}: config "{key}" is not a list of strings', hint=_CORRUPT_HINT)
    for key in ("WorkingDir", "User"):
        if found[key] is not None and not isinstance(found[key], str):
            raise ConfigError(f'{where}: config "{key}" is not a string', hint=_CORRUPT_HINT)
    return found


def _diff_ids(config: dict[str, Any], count: int, where: str) -> list[str | None]:
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if not diff_ids:
        return [None] * count
    if len(diff_ids) != count or not all(isinstance(d, str) and _DIGEST.fullmatch(d) for d in diff_ids):
        raise ConfigError(f"{where}: rootfs.diff_ids does not match the {count} layers", hint=_CORRUPT_HINT)
    return diff_ids


def _docker_plan(src: Source, wanted: str | None) -> Plan:
    manifest = _json(src, "manifest.json")
    if not isinstance(manifest, list) or not manifest or not all(isinstance(e, dict) for e in manifest):
        raise ConfigError("manifest.json: expected a list of images", hint=_CORRUPT_HINT)
    entry = manifest[0]
    if len(manifest) > 1:
        named = [e for e in manifest if wanted in (_normalized(t) for t in e.get("RepoTags") or [])]
        if not named:
            tags = [t for e in manifest for t in e.get("RepoTags") or []]
            raise ConfigError(
                f"the archive holds {len(manifest)} images ({', '.join(tags) or 'untagged'})",
                hint="choose one with --name NAME[:TAG]",
            )
        entry = named[0]
    config_path = _field(entry, "Config", str, "manifest.json")
    layers = _field(entry, "Layers", list, "manifest.json")
    config = _json(src, config_path, _digest_in_path(config_path))
    runtime = _runtime_config(config, config_path)
    diff_ids = _diff_ids(config, len(layers), config_path)
    tags = entry.get("RepoTags") or []
    return Plan(
        wanted or (tags[0] if tags else None),
        runtime,
        [
            Layer(str(path), None, _digest_in_path(str(path)), diff_id)
            for path, diff_id in zip(layers, diff_ids, strict=True)
        ],
    )


def _normalized(name: Any) -> str | None:
    try:
        return images.normalize_name(name) if isinstance(name, str) else None
    except ConfigError:
        return None


def _blob_path(descriptor: Any, where: str) -> tuple[str, str]:
    digest = _field(descriptor, "digest", str, where)
    if not _DIGEST.fullmatch(digest):
        raise ConfigError(f'{where}: unsupported digest "{digest}" (minirun reads sha256 only)', hint=_CORRUPT_HINT)
    return f"blobs/sha256/{digest.removeprefix('sha256:')}", digest


def _blob_json(src: Source, descriptor: Any, where: str) -> Any:
    path, digest = _blob_path(descriptor, where)
    return _json(src, path, digest)


def _oci_plan(src: Source, wanted: str | None) -> Plan:
    if not src.exists("oci-layout"):
        raise ConfigError("index.json without oci-layout: not an OCI image layout", hint=_SOURCE_HINT)
    layout = _json(src, "oci-layout")
    if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
        raise ConfigError('oci-layout: no "imageLayoutVersion"', hint=_CORRUPT_HINT)
    descriptor, name = _pick_manifest(src, _json(src, "index.json"), "index.json", wanted, None)
    manifest = _blob_json(src, descriptor, "index.json")
    config = _blob_json(src, _field(manifest, "config", dict, "manifest"), "manifest config")
    descriptors = _field(manifest, "layers", list, "manifest")
    diff_ids = _diff_ids(config if isinstance(config, dict) else {}, len(descriptors), "image config")
    layers = []
    for number, (layer, diff_id) in enumerate(zip(descriptors, diff_ids, strict=True), 1):
        path, digest = _blob_path(layer, f"layer {number}")
        size = layer.get("size")
        layers.append(Layer(path, layer.get("mediaType"), digest, diff_id, size if isinstance(size, int) else None))
    return Plan(wanted or name, _runtime_config(config, "image config"), layers)


def _pick_manifest(src: Source, index: Any, where: str, wanted: str | None, name: str | None, depth: int = 0):
    """Follow index.json (and nested indexes) to one image manifest: the one named `wanted`, else the only
    one, else the one for this machine's platform. Returns its descriptor and the name annotated on it."""
    manifests = _field(index, "manifests", list, where)
    if not manifests or not all(isinstance(m, dict) for m in manifests):
        raise ConfigError(f"{where} lists no image", hint=_CORRUPT_HINT)
    if wanted:
        named = [m for m in manifests if wanted in (_normalized(n) for n in _annotated_names(m))]
        manifests = named or manifests
    if len(manifests) > 1:
        manifests = _for_this_machine(manifests, where)
    chosen = manifests[0]
    name = next(iter(_annotated_names(chosen)), name)
    if chosen.get("mediaType") in _INDEX_TYPES:
        if depth > 4:
            raise ConfigError(f"{where}: indexes nested too deep", hint=_CORRUPT_HINT)
        nested = _blob_json(src, chosen, where)
        return _pick_manifest(src, nested, f"index {chosen.get('digest')}", wanted, name, depth + 1)
    return chosen, name


def _annotated_names(descriptor: dict[str, Any]) -> list[str]:
    annotations = descriptor.get("annotations") or {}
    return [annotations[key] for key in _NAME_ANNOTATIONS if isinstance(annotations.get(key), str)]


def _for_this_machine(manifests: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    arch = _ARCH.get(platform.machine(), platform.machine())
    platforms = [m.get("platform") if isinstance(m.get("platform"), dict) else {} for m in manifests]
    if not any(platforms):
        names = sorted({n for m in manifests for n in _annotated_names(m)})
        raise ConfigError(
            f"{where} holds {len(manifests)} images ({', '.join(names) or 'unnamed'})",
            hint="choose one by its name with --name NAME[:TAG]",
        )
    found = [
        m for m, p in zip(manifests, platforms, strict=True) if (p.get("os"), p.get("architecture")) == ("linux", arch)
    ]
    if found:
        return found
    offered = sorted({f"{p.get('os')}/{p.get('architecture')}" for p in platforms})
    raise ConfigError(
        f"{where} has {len(manifests)} images and none for linux/{arch} (it has {', '.join(offered)})",
        hint="export the image for this platform, or choose one by its name with --name",
    )


# --- layers --------------------------------------------------------------------------------------------


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


def _check(src: Source, layer: Layer, label: str, room: space.Room, before: Expansion) -> Expansion:
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
            _verify(label, stored.sha.hexdigest(), layer.digest, note)
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
            raise ConfigError(f"{label}: truncated or malformed archive ({exc})", hint=_CORRUPT_HINT) from exc
    if layer.diff_id:
        _verify(f"{label} (uncompressed)", tar_stream.sha.hexdigest(), layer.diff_id)
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


def _apply(src: Source, layer: Layer, root: str, label: str) -> int:
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
            raise ConfigError(f"{label}: truncated or malformed archive ({exc})", hint=_CORRUPT_HINT) from exc
    if layer.digest:
        _verify(label, stored.sha.hexdigest(), layer.digest)
    if layer.diff_id:
        _verify(f"{label} (uncompressed)", tar_stream.sha.hexdigest(), layer.diff_id)
    return devices


def _zstd(label: str) -> ConfigError:
    return ConfigError(
        f"{label} is zstd-compressed, which minirun cannot read",
        hint="export the image with gzip or uncompressed layers (e.g. 'docker save', or skopeo without zstd)",
    )
