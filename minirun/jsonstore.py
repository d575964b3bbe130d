"""Files minirun keeps its records in: JSON written so that no reader ever sees half of one, and directories
of such records listed one way (NAME.json, dotfiles skipped: those are temp files being written).

Every store uses this: container records and name claims (runtime/store.py), pods, networks
(net/network.py), minirun-cni's attachments (cni/store.py). What a store does with a record that cannot be
read is its own business (set aside, named in one line, skipped): never this module's.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any


def _temp_path(path: str) -> str:
    # The writer's pid is in the name so `sweep_temp_files` can tell an abandoned one from one in use.
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")


def _write_temp(path: str, text: str, *, durable: bool = True) -> str:
    """A temp file beside `path` holding `text`; on any failure (a full or read-only disk) none is left, and
    the OSError names the path (errors.host_error turns it into one line for the operator)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    except OSError as exc:
        remove_file(tmp)
        raise OSError(exc.errno, exc.strerror, path) from None
    return tmp


def write_text_atomic(path: str, text: str, *, durable: bool = True) -> None:
    """Readers never see half a file: write a temp file in the same directory (fsync'ed when `durable`),
    then rename it over `path` (rename(2) is atomic within a filesystem)."""
    tmp = _write_temp(path, text, durable=durable)
    try:
        os.replace(tmp, path)
    except OSError:
        remove_file(tmp)
        raise


def write_atomic(path: str, data: dict[str, Any]) -> None:
    """A record, durably, as minirun's own records are written (sorted keys, one per line)."""
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def create_atomic(path: str, text: str) -> bool:
    """Create `path` holding `text` unless it exists; never visible half-written (link(2) is atomic)."""
    tmp = _write_temp(path, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def sweep_temp_files(directory: str) -> list[str]:
    """Remove temp files whose writer died before renaming or linking them."""
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            pid = name.rsplit(".", 2)[-2]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                remove_file(os.path.join(directory, name))
                removed.append(name)
    return removed


def remove_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def read_json(path: str) -> Any:
    """What `path` holds, or None when it does not exist. Raises ValueError for one that is not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def record_names(directory: str) -> list[str]:
    """The NAMEs of the NAME.json records in `directory`, sorted; none when it does not exist."""
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(e[: -len(".json")] for e in entries if e.endswith(".json") and not e.startswith("."))
