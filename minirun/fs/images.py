"""The image store: looking images up, committing one assembled in a staging dir (image_staging), untagging
and deleting. image_layout says where each piece lives, and why a reader never sees half an image.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from minirun import paths
from minirun.errors import Conflict, MinirunError, NotFound
from minirun.fs.content_digest import tree_digest
from minirun.fs.image_layout import STAGING_PREFIX, by_id, store_lock, tag_file, tags_dir
from minirun.fs.image_names import as_name, normalize_name, short_id
from minirun.fs.image_staging import Stage, discard, sweep_locked

# datetime and hashlib are imported where images are written (tempfile too, in image_staging): `run --image`
# only reads the store.

UsedBy = Callable[[str], list[str]]

NOT_FOUND_HINT = "see 'minirun image ls'; build one with 'minirun image build images/busybox'"

_ID = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{4,64}")


class ImageConfig(NamedTuple):
    env: tuple[str, ...]  # "K=V"
    cmd: tuple[str, ...]
    entrypoint: tuple[str, ...]
    workdir: str  # "" when unset
    user: str  # "" when unset; "1000", "1000:1000", "nobody"...


class Image(NamedTuple):
    id: str  # 64 hex
    name: str  # "busybox:latest"; "" for an untagged image a container still uses
    rootfs: str  # absolute path of by-id/<ID>/rootfs
    config: ImageConfig


def _tags() -> dict[str, str]:
    """Every tag -> the ID it names."""
    found = {}
    root = tags_dir()
    for directory, _dirs, files in os.walk(root):
        for file in files:
            if file.endswith(".json") and not file.startswith("."):
                path = os.path.join(directory, file)
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    with open(path) as f:
                        image_id = json.load(f)["id"]
                    if _ID.fullmatch(image_id):
                        found[os.path.relpath(path, root)[: -len(".json")]] = image_id
    return found


def _ids() -> list[str]:
    try:
        return [name for name in os.listdir(by_id()) if _ID.fullmatch(name)]
    except FileNotFoundError:
        return []


def read_metadata(image_id: str) -> dict[str, Any]:
    """config.json of a stored image: {"config": {Env, Cmd, ...}, "created", "size", ...}."""
    try:
        with open(os.path.join(by_id(image_id), "config.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        raise NotFound(f'image "{short_id(image_id)}" is gone', hint=NOT_FOUND_HINT) from None
    except ValueError as exc:
        raise MinirunError(
            f"image {short_id(image_id)}: config.json is corrupt ({exc})", hint="remove it with 'minirun image rm'"
        ) from exc


def _image(image_id: str, name: str) -> Image:
    config = read_metadata(image_id).get("config") or {}
    return Image(
        id=image_id,
        name=name,
        rootfs=os.path.join(by_id(image_id), "rootfs"),
        config=ImageConfig(
            env=tuple(config.get("Env") or ()),
            cmd=tuple(config.get("Cmd") or ()),
            entrypoint=tuple(config.get("Entrypoint") or ()),
            workdir=config.get("WorkingDir") or "",
            user=config.get("User") or "",
        ),
    )


def resolve(ref: str) -> Image:
    """An image by NAME, NAME:TAG, full ID (optionally `sha256:`) or a unique ID prefix of 4 or more hex."""
    tags = _tags()
    name = as_name(ref)
    if name in tags:
        return _image(tags[name], name)
    hex_ref = ref.removeprefix("sha256:")
    if _HEX.fullmatch(hex_ref):
        matches = [image_id for image_id in _ids() if image_id.startswith(hex_ref)]
        if len(matches) > 1:
            raise MinirunError(
                f'image ID prefix "{ref}" is ambiguous: {", ".join(short_id(m) for m in sorted(matches))}',
                hint="give more hex digits or the image's name",
                code=1,
            )
        if matches:
            return _image(matches[0], next(iter(_names_of(tags, matches[0])), ""))
    raise NotFound(f'no such image "{ref}"', hint=NOT_FOUND_HINT)


def _names_of(tags: dict[str, str], image_id: str) -> list[str]:
    return sorted(name for name, tagged in tags.items() if tagged == image_id)


def images() -> list[Image]:
    """One entry per tag, plus untagged images a container still uses (name ""), newest first."""
    tags = _tags()
    found = [_image(image_id, name) for name, image_id in sorted(tags.items()) if os.path.isdir(by_id(image_id))]
    found += [_image(image_id, "") for image_id in sorted(set(_ids()) - set(tags.values()))]
    created = {image.id: read_metadata(image.id).get("created", "") for image in found}
    return sorted(found, key=lambda image: created[image.id], reverse=True)


def names_of(image_id: str) -> list[str]:
    return _names_of(_tags(), image_id)


def commit(stage: Stage, name: str, config: dict[str, Any], used_by: UsedBy, source: str) -> Image:
    """Store the image assembled in `stage` under `name` (NAME[:TAG]): rename it into by-id/ (or keep the
    identical one already there), point the tag at it, then delete what is no longer tagged or used.

    `config` holds Docker's field names: Env, Cmd, Entrypoint, WorkingDir, User."""
    import datetime
    import hashlib

    name = normalize_name(name)
    config = {
        "Env": list(config.get("Env") or []),
        "Cmd": list(config.get("Cmd") or []),
        "Entrypoint": list(config.get("Entrypoint") or []),
        "WorkingDir": config.get("WorkingDir") or "",
        "User": config.get("User") or "",
    }
    try:
        digest, size = tree_digest(stage.rootfs)
    except OSError as exc:  # e.g. a path deeper than PATH_MAX: the layers were applied, but we cannot walk it
        raise MinirunError(f"cannot read the image's files back: {exc.strerror} ({exc.filename})") from None
    image_id = hashlib.sha256(json.dumps({"config": config, "rootfs": digest}, sort_keys=True).encode()).hexdigest()
    metadata = {
        "id": image_id,
        "config": config,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "size": size,
        "rootfs_digest": digest,
        "source": source,
    }
    image_dir = os.path.dirname(stage.rootfs)
    with open(os.path.join(image_dir, "config.json"), "w") as f:
        json.dump(metadata, f, indent=1, sort_keys=True)
    os.chmod(image_dir, 0o755)
    with store_lock():
        os.makedirs(by_id(), mode=0o700, exist_ok=True)
        try:
            os.rename(image_dir, by_id(image_id))
        except OSError as exc:
            if not os.path.isdir(by_id(image_id)):
                raise MinirunError(f"cannot store image {short_id(image_id)}: {exc.strerror}") from exc
            # The same content is already stored: keep that one (and its creation time).
        _write_tag(name, image_id)
        _prune_locked(used_by)
    return _image(image_id, name)


def _write_tag(name: str, image_id: str) -> None:
    # Only under the store lock: a temporary file seen there is a dead writer's (sweep_locked).
    path = tag_file(name)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump({"id": image_id, "name": name}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _remove_tag(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tag_file(name))
    # Drop the empty registry/namespace directories a NAME with "/" made.
    directory = os.path.dirname(tag_file(name))
    while directory != tags_dir():
        try:
            os.rmdir(directory)
        except OSError:
            break
        directory = os.path.dirname(directory)


def _delete_id(image_id: str) -> None:
    # Rename first, so the image disappears at once; a crash (or an entry that cannot go) during the
    # removal leaves a staging dir to sweep.
    doomed = os.path.join(paths.images_dir(), f"{STAGING_PREFIX}rm-{short_id(image_id)}-{os.getpid()}")
    try:
        os.rename(by_id(image_id), doomed)
    except FileNotFoundError:
        return
    discard(doomed, raise_errors=False)


def _prune_locked(used_by: UsedBy) -> list[str]:
    tagged = set(_tags().values())
    removed = []
    for image_id in _ids():
        if image_id not in tagged and not used_by(image_id):
            _delete_id(image_id)
            removed.append(image_id)
    return removed


def prune(used_by: UsedBy) -> list[str]:
    """Delete every image that no tag names and no container uses; returns their IDs."""
    if not os.path.isdir(by_id()):
        return []
    with store_lock():
        sweep_locked()
        return _prune_locked(used_by)


def remove(ref: str, used_by: UsedBy) -> None:
    """Untag NAME (deleting the image when that was its last tag), or delete an image by ID with all its tags.
    Refuses while a container uses an image that would be deleted."""
    image = resolve(ref)
    with store_lock():
        sweep_locked()
        tags = _tags()
        by_name = bool(image.name) and tags.get(image.name) == image.id and as_name(ref) == image.name
        doomed_tags = [image.name] if by_name else _names_of(tags, image.id)
        deletes_image = set(_names_of(tags, image.id)) <= set(doomed_tags)
        if deletes_image:
            users = used_by(image.id)
            if users:
                raise Conflict(
                    f'image "{ref}" is used by container{"s" if len(users) > 1 else ""} {", ".join(users)}',
                    hint=f"remove {'them' if len(users) > 1 else 'it'} first with 'minirun rm -f {' '.join(users)}'",
                    code=1,
                )
        for name in doomed_tags:
            _remove_tag(name)
        if deletes_image:
            _delete_id(image.id)
