"""Image references as a user types them: NAME[:TAG] checked against Docker's grammar (and normalized to
NAME:TAG), and the short form of an image ID that minirun prints.
"""

from __future__ import annotations

import re

from minirun.errors import ConfigError

# Docker's reference grammar, minus digests: lowercase path components, an optional registry host first.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


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


def as_name(ref: str) -> str | None:
    try:
        return normalize_name(ref)
    except ConfigError:
        return None


def short_id(image_id: str) -> str:
    return image_id[:12]
