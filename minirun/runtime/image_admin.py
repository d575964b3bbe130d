"""The image store as the runtime sees it: which containers use an image, and the verbs that may delete
images (they must not delete one a container still runs from). The fs layer cannot read container records,
so these pass it `used_by`."""

from __future__ import annotations

from minirun.fs import images
from minirun.runtime import store


def used_by(image_id: str) -> list[str]:
    """Names of the containers (running or not) whose record says they use image `image_id`."""
    return sorted(
        record.get("name") or record["id"]
        for record in store.all_records()
        if isinstance(record.get("image"), dict) and record["image"].get("id") == image_id
    )


def prune_unused() -> list[str]:
    """Delete images no tag names and no container uses (call after a container is removed)."""
    return images.prune(used_by)


def build(ref: str, tag: str | None) -> images.Image:
    from minirun.fs import recipe  # tarfile, tomllib: only for the verbs that need them

    return recipe.build(ref, tag, used_by)


def import_archive(source: str, name: str | None) -> tuple[images.Image, int]:
    from minirun.fs import imports

    return imports.import_image(source, name, used_by)


def remove(ref: str) -> None:
    images.remove(ref, used_by)


def inspect(ref: str) -> dict:
    """Docker's `image inspect` shape, as far as minirun's images go."""
    image = images.resolve(ref)
    metadata = images.read_metadata(image.id)
    config = metadata.get("config") or {}
    return {
        "Id": f"sha256:{image.id}",
        "RepoTags": images.names_of(image.id),
        "Created": metadata.get("created", ""),
        "Size": metadata.get("size", 0),
        "Config": {
            "Env": config.get("Env") or [],
            "Cmd": config.get("Cmd") or None,
            "Entrypoint": config.get("Entrypoint") or None,
            "WorkingDir": config.get("WorkingDir") or "",
            "User": config.get("User") or "",
        },
        "RootFS": {"Type": "directory", "Path": image.rootfs, "Digest": metadata.get("rootfs_digest", "")},
        "Source": metadata.get("source", ""),
        "UsedBy": used_by(image.id),
    }


def rows() -> list[dict]:
    """`image ls`: one row per tag (Docker's REPOSITORY and TAG), untagged images in use as <none>."""
    found = []
    for image in images.images():
        repository, _, tag = image.name.rpartition(":") if image.name else ("<none>", "", "<none>")
        metadata = images.read_metadata(image.id)
        found.append(
            {
                "Repository": repository,
                "Tag": tag,
                "ID": images.short_id(image.id),
                "CreatedAt": metadata.get("created", ""),
                "Size": metadata.get("size", 0),
            }
        )
    return found
