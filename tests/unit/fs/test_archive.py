"""archive.apply_layer: layers applied in order with whiteouts, metadata kept, hostile entries refused."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from minirun.errors import ConfigError
from minirun.fs.archive import apply_layer, link_target_inside

UID, GID = os.getuid(), os.getgid()
MTIME = 1_600_000_000


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", mode: int = 0o644, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uid, info.gid, info.linkname = kind, mode, MTIME, UID, GID, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def directory(name: str, mode: int = 0o755):
    return entry(name, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str):
    return entry(name, tarfile.SYMTYPE, mode=0o777, link=target)


def hardlink(name: str, target: str):
    return entry(name, tarfile.LNKTYPE, link=target)


def layer(*entries) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buffer.seek(0)
    return buffer


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "rootfs"
    path.mkdir()
    return path


def test_files_dirs_links_and_metadata(root: Path):
    skipped = apply_layer(
        layer(
            directory("bin/"),
            entry("bin/busybox", data=b"\x7fELF...", mode=0o755),
            hardlink("bin/ls", "bin/busybox"),
            symlink("bin/sh", "/bin/busybox"),  # absolute: the image's own /bin, kept as it is
            directory("tmp", mode=0o1777),
            entry("run/fifo", tarfile.FIFOTYPE, mode=0o600),
            entry("dev/null", tarfile.CHRTYPE, mode=0o666),
            entry("./etc/hostname", data=b"box\n", mode=0o600),
        ),
        str(root),
        "layer 1",
    )
    assert skipped == 1  # the device node
    assert not (root / "dev" / "null").exists()
    busybox = (root / "bin" / "busybox").stat()
    assert stat.S_IMODE(busybox.st_mode) == 0o755 and busybox.st_mtime == MTIME
    assert (root / "bin" / "ls").stat().st_ino == busybox.st_ino
    assert os.readlink(root / "bin" / "sh") == "/bin/busybox"
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert (root / "tmp").stat().st_mtime == MTIME  # set after its children, so it stays
    assert stat.S_ISFIFO((root / "run" / "fifo").lstat().st_mode)
    assert (root / "etc" / "hostname").read_bytes() == b"box\n"
    assert stat.S_IMODE((root / "run").stat().st_mode) == 0o755  # made implicitly


def test_whiteouts_hide_lower_layers_only(root: Path):
    apply_layer(
        layer(
            entry("etc/keep", data=b"1"),
            entry("etc/gone", data=b"1"),
            directory("etc/old.d"),
            entry("etc/old.d/x", data=b"1"),
            directory("opt/d"),
            entry("opt/d/lower", data=b"1"),
            directory("opt/d/sub"),
            entry("opt/d/sub/lower", data=b"1"),
        ),
        str(root),
        "layer 1",
    )
    apply_layer(
        layer(
            entry("etc/.wh.gone"),
            entry("etc/.wh.old.d"),
            entry("etc/.wh.never-existed"),
            entry("nowhere/.wh.x"),  # its directory is not there: nothing to hide, nothing made
            directory("opt/d"),
            entry("opt/d/upper", data=b"2"),
            directory("opt/d/sub"),
            entry("opt/d/sub/upper", data=b"2"),
            entry("opt/d/.wh..wh..opq"),  # after some of this layer's own entries: those stay
        ),
        str(root),
        "layer 2",
    )
    assert sorted(os.listdir(root / "etc")) == ["keep"]
    assert sorted(os.listdir(root / "opt" / "d")) == ["sub", "upper"]
    assert sorted(os.listdir(root / "opt" / "d" / "sub")) == ["upper"]
    assert not (root / "nowhere").exists()


def test_upper_layer_replaces_types_without_following_links(root: Path, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    apply_layer(
        layer(entry("a", data=b"file"), directory("b"), entry("b/x"), symlink("c", str(outside))),
        str(root),
        "layer 1",
    )
    apply_layer(layer(directory("a"), entry("b", data=b"now a file"), directory("c"), entry("c/y")), str(root), "l2")
    assert (root / "a").is_dir() and (root / "b").read_bytes() == b"now a file"
    assert (root / "c").is_dir() and not (root / "c").is_symlink()
    assert os.listdir(outside) == []


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([entry("../etc/x")], 'entry "../etc/x" escapes the image root'),
        ([entry("a/../../x")], 'entry "a/../../x" escapes the image root'),
        ([entry("/etc/x")], 'entry "/etc/x" is an absolute path'),
        ([symlink("evil", "OUTSIDE"), entry("evil/pwned")], 'entry "evil/pwned" goes through the symlink "evil"'),
        ([symlink("evil", "/"), directory("evil/dir")], 'entry "evil/dir" goes through the symlink "evil"'),
        ([symlink("a/b/up", "../../..")], 'entry "a/b/up" is a symlink to "../../..", which escapes the image root'),
        ([symlink("up", "/../..")], 'entry "up" is a symlink to "/../..", which escapes'),
        ([hardlink("pw", "/etc/passwd")], 'entry "pw" is a hardlink to "/etc/passwd", which is outside'),
        ([hardlink("x", "../x")], 'entry "x" is a hardlink to "../x", which is outside the image root'),
        ([hardlink("x", "missing")], 'entry "x" is a hardlink to "missing", which is not a regular file'),
        ([directory("d"), hardlink("x", "d")], 'entry "x" is a hardlink to "d", which is not a regular file'),
        ([symlink("s", "/etc/passwd"), hardlink("x", "s")], 'entry "x" is a hardlink to "s", which is not a regular'),
        ([symlink("s", "OUTSIDE"), hardlink("x", "s/passwd")], '"s/passwd", which goes through the symlink "s"'),
        ([entry("f"), entry("f/x")], 'entry "f/x" goes through "f", which is not a directory'),
    ],
)
def test_hostile_entries_are_refused(root: Path, tmp_path: Path, entries, message: str):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("host secret\n")
    for info, _data in entries:
        info.linkname = info.linkname.replace("OUTSIDE", str(outside))
    with pytest.raises(ConfigError) as caught:
        apply_layer(layer(*entries), str(root), "layer 2")
    assert caught.value.msg.startswith("layer 2: ")
    assert message in caught.value.msg
    assert os.listdir(outside) == ["passwd"] and (outside / "passwd").read_text() == "host secret\n"
    assert not (tmp_path / "etc").exists() and not (tmp_path / "x").exists()


def test_symlinks_inside_the_root_are_kept(root: Path):
    apply_layer(
        layer(symlink("usr/lib/x", "../../lib/x"), symlink("etc/mtab", "/proc/mounts"), symlink("a", "b/../c")),
        str(root),
        "layer 1",
    )
    assert os.readlink(root / "usr" / "lib" / "x") == "../../lib/x"
    assert os.readlink(root / "etc" / "mtab") == "/proc/mounts"


def test_link_target_inside():
    assert link_target_inside("bin/sh", "/bin/busybox")
    assert link_target_inside("bin/sh", "busybox")
    assert link_target_inside("a/b/c", "../../x")
    assert link_target_inside("a", "/../") is False
    assert not link_target_inside("a/b/c", "../../../x")
    assert not link_target_inside("a", "..")
    assert link_target_inside("a/b", "./../c/./d/..")


def test_truncated_layer_is_one_clear_error(root: Path):
    data = layer(entry("big", data=b"x" * 100_000)).getvalue()
    with pytest.raises(ConfigError, match=r'layer 1: truncated or malformed archive at entry "big"'):
        apply_layer(io.BytesIO(data[: len(data) // 2]), str(root), "layer 1")
    with pytest.raises(ConfigError, match="layer 1: truncated or malformed archive"):
        apply_layer(io.BytesIO(b"not a tar at all" * 64), str(root), "layer 1")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_owners_and_setuid_are_kept(root: Path):
    info, data = entry("bin/su", data=b"su", mode=0o4755)
    info.uid, info.gid = 0, 0
    home, _ = directory("home/user", mode=0o750)
    home.uid, home.gid = 1000, 1000
    link, _ = symlink("home/user/l", "/x")
    link.uid, link.gid = 1000, 1001
    apply_layer(layer((info, data), (home, b""), (link, b"")), str(root), "layer 1")
    su = (root / "bin" / "su").stat()
    assert (su.st_uid, su.st_gid, stat.S_IMODE(su.st_mode)) == (0, 0, 0o4755)
    assert ((root / "home" / "user").stat().st_uid, (root / "home" / "user").stat().st_gid) == (1000, 1000)
    assert ((root / "home" / "user" / "l").lstat().st_uid, (root / "home" / "user" / "l").lstat().st_gid) == (
        1000,
        1001,
    )
