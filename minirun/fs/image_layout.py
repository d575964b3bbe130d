"""Where the image store keeps what, under `paths.images_dir()`, and the one lock every change to it takes.

    by-id/<ID>/rootfs/        the image's root filesystem
    by-id/<ID>/config.json    its runtime config (Docker's field names), creation time, size
    tags/<NAME>:<TAG>.json    {"id": <ID>, "name": ...}; a NAME with "/" becomes subdirectories
    .tmp-*                    staging: a build or import happens here and is renamed into by-id/ whole

<ID> is 64 hex: the sha256 of the runtime config and of a digest of the rootfs content, so rebuilding the
same thing gives the same ID. Only complete images are ever renamed into by-id/, and every change to
by-id/ and tags/ happens under one flock, so a failed or killed build leaves nothing a reader could see.
"""

from __future__ import annotations

import contextlib
import os

from minirun import paths
from minirun.filelock import exclusive

STAGING_PREFIX = ".tmp-"


def by_id(image_id: str = "") -> str:
    return os.path.join(paths.images_dir(), "by-id", image_id)


def tags_dir() -> str:
    return os.path.join(paths.images_dir(), "tags")


def tag_file(name: str) -> str:
    return os.path.join(tags_dir(), f"{name}.json")


def store_lock() -> contextlib.AbstractContextManager[None]:
    return exclusive(os.path.join(paths.images_dir(), ".lock"))
