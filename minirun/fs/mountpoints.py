"""Mount targets inside the container's view, made safe to mount on: an entry in the way (above all a
symlink an image planted, which a mount would follow) is removed, never followed; and the generated /etc
files bound over the view's own.
"""

from __future__ import annotations

import os

from minirun.fs.etcfiles import ETC_FILES
from minirun.kernel import syscalls as k


def is_within(path: str, top: str) -> bool:
    path, top = os.path.normpath(path), os.path.normpath(top)
    return top == "/" or path == top or path.startswith(top + "/")


def ensure_dir(path: str) -> None:
    if os.path.islink(path):
        os.unlink(path)  # a mount point must not lead anywhere else (this edits the upper dir only)
    os.makedirs(path, mode=0o755, exist_ok=True)


def ensure_regular_file(path: str) -> None:
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
        os.unlink(path)  # e.g. an image's resolv.conf -> ../run/systemd/resolve/stub-resolv.conf
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def bind_etc_files(etc_dir: str, target_etc: str, *, create_missing: bool) -> None:
    """Bind the generated files over /etc's."""
    for name in ETC_FILES:
        source = os.path.join(etc_dir, name)
        target = os.path.join(target_etc, name)
        if create_missing:
            ensure_regular_file(target)
        elif not os.path.isfile(target):
            continue  # the host has none: nothing to cover (we never write into the host's /etc)
        k.mount(source, target, None, k.MS_BIND)
