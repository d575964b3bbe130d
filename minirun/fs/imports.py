"""`minirun image import`: `docker save` tarballs and OCI image layouts (a directory, or a tar of one).

Both formats name a config blob and an ordered list of layer tars (plain or gzip). Docker >= 25 writes an
OCI layout and a manifest.json into the same tarball; manifest.json is read first since it carries the
RepoTags. Every blob whose digest is known (its descriptor, its `blobs/sha256/<hex>` name, the config's
rootfs.diff_ids for the uncompressed layers) is checked, and the layers go through `archive.apply_layer`,
which refuses anything that would land outside the image root.

This module runs an import from start to end; import_sources reads the archive, import_manifests says
what to import from it, import_layers checks and applies each layer.
"""

from __future__ import annotations

import os
import sys

from minirun.errors import ConfigError, MinirunError
from minirun.fs import image_staging, images, import_layers, space
from minirun.fs.import_manifests import read_plan
from minirun.fs.import_sources import open_source


def import_image(source: str, name: str | None, used_by: images.UsedBy) -> tuple[images.Image, int]:
    """Import FILE, a directory or "-" (stdin) and store it as `name` (else the name the archive gives).
    Returns the image and how many device nodes its layers held (skipped: a container gets its own /dev)."""
    wanted = images.normalize_name(name) if name else None
    with image_staging.staging() as stage:
        path = _spool_stdin(stage.dir) if source == "-" else source
        with open_source(path) as src:
            plan = read_plan(src, wanted)
            stored_name = _name_for(plan.name)
            # Every layer is checked before any is written: its digests, and whether what its headers
            # say it expands to leaves the data root its margin of free space.
            room = space.Room(stage.dir)
            needed = import_layers.Expansion(0, 0)
            for number, layer in enumerate(plan.layers, 1):
                needed = import_layers.check(src, layer, f"layer {number}", room, needed)
            devices = 0
            for number, layer in enumerate(plan.layers, 1):
                devices += import_layers.apply(src, layer, stage.rootfs, f"layer {number}")
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
