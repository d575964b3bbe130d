"""What an image archive says to import: `docker save`'s manifest.json or an OCI layout's index.json (and
the indexes and manifests it leads to), read into a Plan: the image's name, its runtime config and its
layers in order. Every JSON blob whose digest is known is checked against it as it is read.

OCI image layout and index: https://github.com/opencontainers/image-spec/blob/main/image-layout.md
"""

from __future__ import annotations

import hashlib
import json
import platform
import posixpath
import re
from typing import Any, NamedTuple

from minirun.errors import ConfigError
from minirun.fs import image_names
from minirun.fs.import_sources import CORRUPT_HINT, SOURCE_HINT, Source

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}

_BLOB_PATH = re.compile(r"(?:^|.*/)blobs/sha256/([0-9a-f]{64})|([0-9a-f]{64})\.json")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le"}


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


def read_plan(src: Source, wanted: str | None) -> Plan:
    """What to import from `src`: its name, runtime config and layers in order."""
    if src.exists("manifest.json"):
        return _docker_plan(src, wanted)
    if src.exists("index.json"):
        return _oci_plan(src, wanted)
    raise ConfigError(
        "not an image archive: it has neither manifest.json (docker save) nor index.json (OCI layout)",
        hint=SOURCE_HINT,
    )


def _json(src: Source, path: str, digest: str | None = None) -> Any:
    data = src.read(path)
    if digest:
        verify_digest(path, hashlib.sha256(data).hexdigest(), digest)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc})", hint=CORRUPT_HINT) from exc


def verify_digest(what: str, actual_hex: str, expected: str, note: str = "") -> None:
    if f"sha256:{actual_hex}" != expected:
        raise ConfigError(
            f"{what}: content does not match its digest (expected {expected}, got sha256:{actual_hex}){note}",
            hint=CORRUPT_HINT,
        )


def _digest_in_path(path: str) -> str | None:
    match = _BLOB_PATH.fullmatch(posixpath.normpath(path))
    return f"sha256:{match.group(1) or match.group(2)}" if match else None


def _field(document: Any, key: str, kind: type, where: str) -> Any:
    value = document.get(key) if isinstance(document, dict) else None
    if not isinstance(value, kind):
        raise ConfigError(f'{where}: "{key}" is missing or not a {kind.__name__}', hint=CORRUPT_HINT)
    return value


def _runtime_config(config: Any, where: str) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise ConfigError(f"{where} is not a JSON object", hint=CORRUPT_HINT)
    runtime = config.get("config") or {}
    if not isinstance(runtime, dict):
        raise ConfigError(f'{where}: "config" is not a JSON object', hint=CORRUPT_HINT)
    found = {key: runtime.get(key) for key in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User")}
    for key in ("Env", "Cmd", "Entrypoint"):
        value = found[key]
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f'{where}: config "{key}" is not a list of strings', hint=CORRUPT_HINT)
    for key in ("WorkingDir", "User"):
        if found[key] is not None and not isinstance(found[key], str):
            raise ConfigError(f'{where}: config "{key}" is not a string', hint=CORRUPT_HINT)
    return found


def _diff_ids(config: dict[str, Any], count: int, where: str) -> list[str | None]:
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if not diff_ids:
        return [None] * count
    if len(diff_ids) != count or not all(isinstance(d, str) and _DIGEST.fullmatch(d) for d in diff_ids):
        raise ConfigError(f"{where}: rootfs.diff_ids does not match the {count} layers", hint=CORRUPT_HINT)
    return diff_ids


def _docker_plan(src: Source, wanted: str | None) -> Plan:
    manifest = _json(src, "manifest.json")
    if not isinstance(manifest, list) or not manifest or not all(isinstance(e, dict) for e in manifest):
        raise ConfigError("manifest.json: expected a list of images", hint=CORRUPT_HINT)
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
        return image_names.normalize_name(name) if isinstance(name, str) else None
    except ConfigError:
        return None


def _blob_path(descriptor: Any, where: str) -> tuple[str, str]:
    digest = _field(descriptor, "digest", str, where)
    if not _DIGEST.fullmatch(digest):
        raise ConfigError(f'{where}: unsupported digest "{digest}" (minirun reads sha256 only)', hint=CORRUPT_HINT)
    return f"blobs/sha256/{digest.removeprefix('sha256:')}", digest


def _blob_json(src: Source, descriptor: Any, where: str) -> Any:
    path, digest = _blob_path(descriptor, where)
    return _json(src, path, digest)


def _oci_plan(src: Source, wanted: str | None) -> Plan:
    if not src.exists("oci-layout"):
        raise ConfigError("index.json without oci-layout: not an OCI image layout", hint=SOURCE_HINT)
    layout = _json(src, "oci-layout")
    if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
        raise ConfigError('oci-layout: no "imageLayoutVersion"', hint=CORRUPT_HINT)
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
        raise ConfigError(f"{where} lists no image", hint=CORRUPT_HINT)
    if wanted:
        named = [m for m in manifests if wanted in (_normalized(n) for n in _annotated_names(m))]
        manifests = named or manifests
    if len(manifests) > 1:
        manifests = _for_this_machine(manifests, where)
    chosen = manifests[0]
    name = next(iter(_annotated_names(chosen)), name)
    if chosen.get("mediaType") in _INDEX_TYPES:
        if depth > 4:
            raise ConfigError(f"{where}: indexes nested too deep", hint=CORRUPT_HINT)
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
