"""`minirun image build DIR|NAME`: an image from a recipe directory, without any registry.

A recipe is `image.toml` (name, runtime config, directories, host files to copy, busybox applets) plus an
optional `rootfs/` tree copied in as it is (owned by root). The build writes one tar of all that and
applies it like any imported layer, so a recipe gets the same path checks as a hostile archive. The keys
are described in images/README.md.
"""

from __future__ import annotations

import os
import posixpath
import stat
import struct
import subprocess
import tarfile
import time
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

import minirun
from minirun.errors import ConfigError, NotFound
from minirun.fs import archive, image_staging, images, tree_walk

RECIPE_FILE = "image.toml"
# The recipes shipped next to the package (the repository's images/ directory).
RECIPES_DIR = Path(minirun.__file__).resolve().parent.parent / "images"

_TOP_KEYS = {"name", "config", "dirs", "copy", "applets"}
_CONFIG_KEYS = {"Env", "Cmd", "Entrypoint", "WorkingDir", "User"}
_COPY_KEYS = {"from", "to", "mode", "package", "static"}
_APPLET_KEYS = {"binary", "link", "skip"}
_PT_INTERP = 3  # an ELF program header naming the dynamic loader


class Dir(NamedTuple):
    path: str  # inside the image, relative ("var/spool")
    mode: int
    uid: int
    gid: int


class Copy(NamedTuple):
    source: str  # on the host
    path: str  # inside the image, relative
    mode: int | None  # None: the host file's
    package: str | None  # the Debian package that provides `source`, for the error when it is missing
    static: bool


class Applets(NamedTuple):
    binary: str  # inside the image, relative ("bin/busybox")
    symlink: bool
    skip: frozenset[str]


class Recipe(NamedTuple):
    directory: Path
    name: str
    config: dict[str, Any]
    dirs: list[Dir]
    copies: list[Copy]
    applets: Applets | None


def find(ref: str) -> Path:
    """A recipe directory: `ref` itself when it is one, else the shipped recipe named `ref`."""
    path = Path(ref)
    if (path / RECIPE_FILE).is_file():
        return path.resolve()
    shipped = RECIPES_DIR / ref
    if "/" not in ref and (shipped / RECIPE_FILE).is_file():
        return shipped
    available = sorted(p.parent.name for p in RECIPES_DIR.glob(f"*/{RECIPE_FILE}"))
    raise NotFound(
        f'no recipe "{ref}": not a directory with an {RECIPE_FILE}, nor a recipe shipped in {RECIPES_DIR}',
        hint=f"give a recipe directory or one of: {', '.join(available) or '(none shipped)'}",
    )


def build(ref: str, tag: str | None, used_by: images.UsedBy) -> images.Image:
    """Build the recipe `ref` (a directory or a shipped recipe's name) and store it as `tag` or its name."""
    recipe = load(find(ref))
    name = images.normalize_name(tag or recipe.name)
    with image_staging.staging() as stage:
        layer = os.path.join(stage.dir, "recipe.tar")
        try:
            with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
                _write_layer(recipe, tar)
            with open(layer, "rb") as f:
                archive.apply_layer(f, stage.rootfs, f"recipe {recipe.directory}")
        except OSError as exc:
            if exc.filename is not None:
                raise
            # A write on a full or read-only data root names no file: name the one being written.
            raise OSError(exc.errno, exc.strerror, stage.dir) from None
        return images.commit(stage, name, recipe.config, used_by, f"recipe {recipe.directory}")


# --- reading image.toml --------------------------------------------------------------------------------


def load(directory: Path) -> Recipe:
    path = directory / RECIPE_FILE
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", hint="fix the TOML syntax") from exc
    where = str(path)
    _known(data, _TOP_KEYS, where)
    name = data.get("name")
    if not isinstance(name, str):
        raise ConfigError(f'{where}: "name" is missing', hint='add name = "NAME" (or NAME:TAG)')
    images.normalize_name(name)
    config = data.get("config", {})
    _known(config, _CONFIG_KEYS, f"{where} [config]")
    for key in ("Env", "Cmd", "Entrypoint"):
        if not isinstance(config.get(key, []), list) or not all(isinstance(v, str) for v in config.get(key, [])):
            raise ConfigError(f"{where} [config]: {key} must be a list of strings", hint='e.g. Cmd = ["sh"]')
    applets = data.get("applets")
    return Recipe(
        directory,
        name,
        config,
        [_dir(p, v, where) for p, v in sorted(data.get("dirs", {}).items())],
        [_copy(c, where) for c in data.get("copy", [])],
        _applets(applets, where) if applets is not None else None,
    )


def _known(table: Any, keys: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} is not a table", hint="see images/README.md for the recipe format")
    unknown = sorted(set(table) - keys)
    if unknown:
        raise ConfigError(f'{where}: unknown key "{unknown[0]}"', hint=f"known keys: {', '.join(sorted(keys))}")


def _image_path(path: Any, where: str) -> str:
    """An absolute path inside the image, returned relative to its root."""
    if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
        raise ConfigError(f'{where}: "{path}" is not an absolute path inside the image', hint="write it as /DIR/NAME")
    relative = posixpath.normpath(path).lstrip("/")
    if not relative:
        raise ConfigError(f"{where}: the image root itself cannot be listed", hint="name a path below /")
    return relative


def _mode(text: Any, where: str) -> int:
    try:
        mode = int(text, 8)
    except (TypeError, ValueError):
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise ConfigError(f'{where}: mode "{text}" is not octal permissions', hint='write it as a string, e.g. "0755"')
    return mode


def _dir(path: str, value: Any, where: str) -> Dir:
    where = f"{where} [dirs] {path}"
    if isinstance(value, str):
        value = {"mode": value}
    _known(value, {"mode", "uid", "gid"}, where)
    uid, gid = value.get("uid", 0), value.get("gid", 0)
    if not isinstance(uid, int) or not isinstance(gid, int) or uid < 0 or gid < 0:
        raise ConfigError(f"{where}: uid and gid must be numbers", hint="e.g. uid = 65534")
    return Dir(_image_path(path, where), _mode(value.get("mode", "0755"), where), uid, gid)


def _copy(table: Any, where: str) -> Copy:
    where = f"{where} [[copy]]"
    _known(table, _COPY_KEYS, where)
    source = table.get("from")
    if not isinstance(source, str) or not source:
        raise ConfigError(f'{where}: "from" (a host path) is missing', hint='e.g. from = "/bin/busybox"')
    return Copy(
        source,
        _image_path(table.get("to", source), where),
        _mode(table["mode"], where) if "mode" in table else None,
        table.get("package"),
        bool(table.get("static", False)),
    )


def _applets(table: Any, where: str) -> Applets:
    where = f"{where} [applets]"
    _known(table, _APPLET_KEYS, where)
    link = table.get("link", "hardlink")
    if link not in ("hardlink", "symlink"):
        raise ConfigError(f'{where}: link = "{link}"', hint='use "hardlink" or "symlink"')
    skip = table.get("skip", [])
    return Applets(
        _image_path(table.get("binary"), where),
        link == "symlink",
        frozenset(_image_path(s, where) for s in skip),
    )


# --- the layer -----------------------------------------------------------------------------------------


def _write_layer(recipe: Recipe, tar: tarfile.TarFile) -> None:
    now = int(time.time())
    declared = {d.path for d in recipe.dirs}
    for d in recipe.dirs:
        tar.addfile(_info(d.path, tarfile.DIRTYPE, d.mode, now, d.uid, d.gid))
    rootfs_dir = recipe.directory / "rootfs"
    if rootfs_dir.is_dir():
        _add_tree(tar, rootfs_dir, declared)
    sources = {}
    for copy in recipe.copies:
        _check_source(copy, recipe.directory)
        st = os.stat(copy.source)
        info = _info(copy.path, tarfile.REGTYPE, copy.mode if copy.mode is not None else st.st_mode & 0o7777, now)
        info.size = st.st_size
        with open(copy.source, "rb") as f:
            tar.addfile(info, f)
        sources[copy.path] = copy.source
    if recipe.applets:
        _add_applets(tar, recipe.applets, sources, now)


def _info(path: str, kind: bytes, mode: int, mtime: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, mtime, uid, gid
    return info


def _add_tree(tar: tarfile.TarFile, root: Path, declared: set[str]) -> None:
    """rootfs/ as it is, owned by root (whoever owns the checkout). Walked without recursion and relative
    to directory descriptors, so a tree deeper than the recursion limit or PATH_MAX is no problem."""
    first_path: dict[tuple[int, int], str] = {}  # files with several names: the later ones are hardlinks
    for entry in tree_walk.walk(str(root)):
        path = os.fsdecode(entry.path[1:])
        st = entry.stat
        if stat.S_ISDIR(st.st_mode) and path in declared:
            continue
        info = _info(path, tarfile.DIRTYPE, stat.S_IMODE(st.st_mode), int(st.st_mtime))
        info.uname = info.gname = "root"
        if stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in first_path:
                info.type, info.linkname = tarfile.LNKTYPE, first_path[key]
                tar.addfile(info)
                continue
            first_path[key] = path
            info.type, info.size = tarfile.REGTYPE, st.st_size
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=entry.dir_fd)
            with os.fdopen(fd, "rb") as f:
                tar.addfile(info, f)
            continue
        if stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(entry.name, dir_fd=entry.dir_fd)
        elif stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
        elif not stat.S_ISDIR(st.st_mode):
            continue  # sockets and device nodes: a container gets its own /dev
        tar.addfile(info)


def _check_source(copy: Copy, directory: Path) -> None:
    install = f"apt-get install {copy.package}" if copy.package else f"provide {copy.source} or fix the recipe"
    if not os.path.isfile(copy.source):
        raise NotFound(f"{copy.source} not found (the recipe {directory} copies it)", hint=install)
    if copy.static and not _is_static_elf(copy.source):
        raise ConfigError(
            f"{copy.source} is not a statically linked executable, and the image has no libc to run it with",
            hint=install if copy.package else "point the recipe at a static binary",
        )


def _is_static_elf(path: str) -> bool:
    """An ELF executable with no PT_INTERP program header: it needs no dynamic loader."""
    with open(path, "rb") as f:
        header = f.read(64)
        if len(header) < 52 or header[:4] != b"\x7fELF" or header[4] not in (1, 2) or header[5] not in (1, 2):
            return False
        order = "<" if header[5] == 1 else ">"
        if header[4] == 2:  # 64-bit
            (phoff,) = struct.unpack_from(order + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 54)
        else:
            (phoff,) = struct.unpack_from(order + "I", header, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 42)
        f.seek(phoff)
        for _ in range(phnum):
            entry = f.read(phentsize)
            if len(entry) < 4:
                return False
            if struct.unpack_from(order + "I", entry)[0] == _PT_INTERP:
                return False
    return True


def _add_applets(tar: tarfile.TarFile, applets: Applets, sources: dict[str, str], now: int) -> None:
    host_binary = sources.get(applets.binary)
    if host_binary is None:
        raise ConfigError(
            f"[applets] binary /{applets.binary} is not one of the recipe's [[copy]] destinations",
            hint="copy the binary in with a [[copy]] entry whose `to` is the applets' binary",
        )
    try:
        listed = subprocess.run([host_binary, "--list-full"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ConfigError(
            f"{host_binary} --list-full failed ({exc})", hint="[applets] needs a busybox binary as `binary`"
        ) from exc
    for line in sorted(set(listed.split())):
        path = posixpath.normpath(line).lstrip("/")
        if path in applets.skip or path == applets.binary or path.startswith(".."):
            continue
        if applets.symlink:
            info = _info(path, tarfile.SYMTYPE, 0o777, now)
            info.linkname = "/" + applets.binary
        else:
            info = _info(path, tarfile.LNKTYPE, 0o755, now)
            info.linkname = applets.binary  # hardlink names are archive paths
        tar.addfile(info)
