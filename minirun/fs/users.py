"""--user and an image's User, resolved against the container's own /etc/passwd and /etc/group (runc's
user.GetExecUser rules): a name must exist there, a number need not (gid 0 and home / then)."""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

from minirun.errors import ConfigError


class ExecUser(NamedTuple):
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def ids(self) -> tuple[int, int, tuple[int, ...]]:
        return self.uid, self.gid, self.groups


def resolve(user: str, etc_root: str) -> ExecUser:
    """`user` is NAME|UID[:GROUP|GID]; `etc_root` the directory whose etc/passwd and etc/group count."""
    who, _, group = user.partition(":")
    if not who or (":" in user and not group):
        raise ConfigError(f'invalid --user "{user}"', hint="use --user UID[:GID] or NAME[:GROUP]")
    passwd = _entries(etc_root, "etc/passwd", 7)
    groups = _entries(etc_root, "etc/group", 4)
    entry = next((e for e in passwd if e[0] == who or (who.isdigit() and e[2] == who)), None)
    if entry is None and not who.isdigit():
        raise ConfigError(
            f"unable to find user {who}: no matching entries in passwd file",
            hint="give a numeric --user UID[:GID], or a user the image's /etc/passwd has",
        )
    uid = int(entry[2]) if entry else int(who)
    gid = int(entry[3]) if entry and entry[3].isdigit() else 0
    home = entry[5] if entry and entry[5] else "/"
    if group:
        found = next((g for g in groups if g[0] == group or (group.isdigit() and g[2] == group)), None)
        if found is None and not group.isdigit():
            raise ConfigError(
                f"unable to find group {group}: no matching entries in group file",
                hint="give a numeric GID, or a group the image's /etc/group has",
            )
        gid = int(found[2]) if found else int(group)
    name = entry[0] if entry else None
    # The primary group first, then the groups listing the user (runc does the same: `id` in Docker shows
    # groups=0(root) for --user 1000).
    supplementary = (gid,) + tuple(
        int(g[2]) for g in groups if name and g[2].isdigit() and name in g[3].split(",") and int(g[2]) != gid
    )
    if uid > 0xFFFFFFFE or gid > 0xFFFFFFFE:
        raise ConfigError(f'invalid --user "{user}": id out of range', hint="use ids below 4294967295")
    return ExecUser(uid, gid, supplementary, home)


def _entries(root: str, relative: str, fields: int) -> list[list[str]]:
    path = os.path.join(root, relative) if root == "/" else _inside(root, relative)
    if path is None:
        return []
    try:
        lines = _read_account_file(path).decode(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split(":")
        if len(parts) == fields and not line.startswith("#"):
            found.append(parts)
    return found


# An /etc/passwd or /etc/group is a few KiB; the container made this one (`exec -u NAME` reads it): never
# more than this, never a device (/dev/zero) or a FIFO (which would block).
MAX_ACCOUNT_FILE = 1 << 20


def _read_account_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file", hint="the container's account files must be files")
        data = os.read(fd, MAX_ACCOUNT_FILE + 1)
        if len(data) > MAX_ACCOUNT_FILE:
            raise ConfigError(f"{path} is over {MAX_ACCOUNT_FILE >> 20} MiB", hint="that is no /etc/passwd")
        return data
    finally:
        os.close(fd)


def _inside(root: str, relative: str, max_links: int = 40) -> str | None:
    """`relative` resolved as the container will see it: symlinks followed with `root` as /, `..` stopping
    at it (what openat2's RESOLVE_IN_ROOT does), so an image's `etc/passwd -> /etc/passwd.real` works and
    no link leads to the host's files. None when it cannot be resolved."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        if not os.path.islink(candidate):
            done.append(part)
            continue
        links += 1
        if links > max_links:
            return None
        target = os.readlink(candidate)
        if target.startswith("/"):
            done = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return os.path.join(root, *done)
