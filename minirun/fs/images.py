"""The image store: content-addressed root filesystems plus tags, under `paths.images_dir()`.

    by-id/<ID>/rootfs/        the image's root filesystem
    by-id/<ID>/config.json    its runtime config (Docker's field names), creation time, size
    tags/<NAME>:<TAG>.json    {"id": <ID>, "name": ...}; a NAME with "/" becomes subdirectories
    .tmp-*                    staging: a build or import happens here and is renamed into by-id/ whole

<ID> is 64 hex: the sha256 of the runtime config and of a digest of the rootfs content, so rebuilding the
same thing gives the same ID. Only complete images are ever renamed into by-id/, and every change to
by-id/ and tags/ happens under one flock, so a failed or killed build leaves nothing a reader could see.

A staging dir is made and flocked by its writer under that same store lock, so under the store lock a
staging dir nobody holds (and a temporary tag file, written only under it) is a dead writer's: the next
command that takes the lock removes it, however young it is (`kill -9` of an import, then the retry).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from minirun import paths
from minirun.errors import ConfigError, Conflict, MinirunError, NotFound
from minirun.filelock import exclusive
from minirun.fs import tree

# hashlib, datetime and tempfile are imported where images are written: `run --image` only reads the store.

UsedBy = Callable[[str], list[str]]

NOT_FOUND_HINT = "see 'minirun image ls'; build one with 'minirun image build images/busybox'"
STAGING_PREFIX = ".tmp-"

_ID = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{4,64}")
# Docker's reference grammar, minus digests: lowercase path components, an optional registry host first.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


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


class Stage(NamedTuple):
    dir: str  # the staging dir, removed whatever happens
    rootfs: str  # where the image's root filesystem is assembled


def normalize_name(ref: str) -> str:
    """`busybox` -> `busybox:latest`; ConfigError for what Docker would not accept as NAME[:TAG]."""
    name, tag = ref, "latest"
    if "@" in ref:
        raise ConfigError(f'image name "{ref}" has a digest', hint="name images as NAME or NAME:TAG")
    head, _, last = ref.rpartition("/")
    if ":" in last:
        base, _, tag = last.partition(":")
        name = f"{head}/{base}" if head else base
    components = name.split("/")
    valid = (
        bool(name)
        and len(name) <= 255
        and _TAG.fullmatch(tag) is not None
        and all(_COMPONENT.fullmatch(c) for c in components[1:])
        and (_COMPONENT.fullmatch(components[0]) or (len(components) > 1 and _HOST.fullmatch(components[0])))
    )
    if not valid:
        raise ConfigError(
            f'invalid image name "{ref}"',
            hint="use NAME or NAME:TAG: lowercase letters, digits and . _ - in NAME, optionally REGISTRY/ before it",
        )
    return f"{name}:{tag}"


def _as_name(ref: str) -> str | None:
    try:
        return normalize_name(ref)
    except ConfigError:
        return None


def short_id(image_id: str) -> str:
    return image_id[:12]


# --- reading -------------------------------------------------------------------------------------------


def _by_id(image_id: str = "") -> str:
    return os.path.join(paths.images_dir(), "by-id", image_id)


def _tags_dir() -> str:
    return os.path.join(paths.images_dir(), "tags")


def _tag_file(name: str) -> str:
    return os.path.join(_tags_dir(), f"{name}.json")


def _lock() -> contextlib.AbstractContextManager[None]:
    return exclusive(os.path.join(paths.images_dir(), ".lock"))


def _tags() -> dict[str, str]:
    """Every tag -> the ID it names."""
    found = {}
    root = _tags_dir()
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
        return [name for name in os.listdir(_by_id()) if _ID.fullmatch(name)]
    except FileNotFoundError:
        return []


def read_metadata(image_id: str) -> dict[str, Any]:
    """config.json of a stored image: {"config": {Env, Cmd, ...}, "created", "size", ...}."""
    try:
        with open(os.path.join(_by_id(image_id), "config.json")) as f:
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
        rootfs=os.path.join(_by_id(image_id), "rootfs"),
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
    name = _as_name(ref)
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
    found = [_image(image_id, name) for name, image_id in sorted(tags.items()) if os.path.isdir(_by_id(image_id))]
    found += [_image(image_id, "") for image_id in sorted(set(_ids()) - set(tags.values()))]
    created = {image.id: read_metadata(image.id).get("created", "") for image in found}
    return sorted(found, key=lambda image: created[image.id], reverse=True)


def names_of(image_id: str) -> list[str]:
    return _names_of(_tags(), image_id)


# --- writing -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def staging() -> Iterator[Stage]:
    """A private directory inside the store for assembling one image; removed on the way out, whatever
    happens. Its flock, taken before the store lock is let go, tells `_sweep_locked` in other processes
    that it is in use."""
    import tempfile

    os.makedirs(paths.images_dir(), mode=0o700, exist_ok=True)
    with _lock():
        _sweep_locked()
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
            _discard(directory)
        finally:
            os.close(fd)


def _sweep_locked() -> None:
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
        _discard(path, raise_errors=False)
    for directory, _dirs, files in os.walk(_tags_dir()):
        for file in files:
            if file.startswith(".") and file.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, file))


def _discard(directory: str, *, raise_errors: bool = True) -> bool:
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
    with _lock():
        os.makedirs(_by_id(), mode=0o700, exist_ok=True)
        try:
            os.rename(image_dir, _by_id(image_id))
        except OSError as exc:
            if not os.path.isdir(_by_id(image_id)):
                raise MinirunError(f"cannot store image {short_id(image_id)}: {exc.strerror}") from exc
            # The same content is already stored: keep that one (and its creation time).
        _write_tag(name, image_id)
        _prune_locked(used_by)
    return _image(image_id, name)


def _write_tag(name: str, image_id: str) -> None:
    # Only under the store lock: a temporary file seen there is a dead writer's (_sweep_locked).
    path = _tag_file(name)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump({"id": image_id, "name": name}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _remove_tag(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_tag_file(name))
    # Drop the empty registry/namespace directories a NAME with "/" made.
    directory = os.path.dirname(_tag_file(name))
    while directory != _tags_dir():
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
        os.rename(_by_id(image_id), doomed)
    except FileNotFoundError:
        return
    _discard(doomed, raise_errors=False)


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
    if not os.path.isdir(_by_id()):
        return []
    with _lock():
        _sweep_locked()
        return _prune_locked(used_by)


def remove(ref: str, used_by: UsedBy) -> None:
    """Untag NAME (deleting the image when that was its last tag), or delete an image by ID with all its tags.
    Refuses while a container uses an image that would be deleted."""
    image = resolve(ref)
    with _lock():
        _sweep_locked()
        tags = _tags()
        by_name = bool(image.name) and tags.get(image.name) == image.id and _as_name(ref) == image.name
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


# --- content digest ------------------------------------------------------------------------------------


def tree_digest(root: str) -> tuple[str, int]:
    """A sha256 over every entry's path, type, mode, owner and content (not mtimes, so a rebuild of the same
    files has the same digest), and the tree's size in bytes (hardlinked files counted once)."""
    import hashlib

    digest = hashlib.sha256()
    contents: dict[tuple[int, int], str] = {}
    size = 0
    # Without recursion and relative to directory descriptors: an image may be deeper than the recursion
    # limit and than PATH_MAX.
    for entry in tree.walk(root):
        st = entry.stat
        if stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key not in contents:
                contents[key] = _file_sha256(entry.dir_fd, entry.name)
                size += st.st_size
            detail = contents[key].encode()
        elif stat.S_ISLNK(st.st_mode):
            detail = os.fsencode(os.readlink(entry.name, dir_fd=entry.dir_fd))
        else:
            detail = b""
        digest.update(b"%s\0%o\0%d\0%d\0%s\n" % (entry.path, st.st_mode, st.st_uid, st.st_gid, detail))
    return f"sha256:{digest.hexdigest()}", size


def _file_sha256(dir_fd: int, name: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
