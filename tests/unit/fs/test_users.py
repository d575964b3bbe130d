"""--user resolution against a container's own /etc/passwd and /etc/group (runc's rules)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from minirun.errors import ConfigError
from minirun.fs import users


@pytest.fixture
def root(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd.real").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nwheel:x:10:root,app\napp:x:1000:\n")
    os.symlink("/etc/passwd.real", etc / "passwd")  # absolute: the image's own /etc, not the host's
    return tmp_path


def test_names_numbers_and_groups(root: Path):
    assert users.resolve("app", str(root)) == users.ExecUser(1000, 1000, (1000, 10), "/home/app")
    assert users.resolve("0", str(root)) == users.ExecUser(0, 0, (0, 10), "/root")
    assert users.resolve("4000", str(root)) == users.ExecUser(4000, 0, (0,), "/")  # unknown number: gid 0
    assert users.resolve("app:wheel", str(root)).gid == 10


def test_unknown_names_are_one_line_errors(root: Path):
    with pytest.raises(ConfigError, match="unable to find user nobody"):
        users.resolve("nobody", str(root))
    with pytest.raises(ConfigError, match="unable to find group staff"):
        users.resolve("app:staff", str(root))
    with pytest.raises(ConfigError, match="invalid --user"):
        users.resolve("app:", str(root))


def test_links_resolve_inside_the_root_only(root: Path):
    (root / "etc" / "passwd").unlink()
    os.symlink("../../../../../../etc/passwd.real", root / "etc" / "passwd")  # climbs: stops at the image's /
    assert users._inside(str(root), "etc/passwd") == str(root / "etc" / "passwd.real")
    assert users.resolve("app", str(root)).uid == 1000
    (root / "etc" / "passwd").unlink()
    os.symlink("/etc/hostname", root / "etc" / "passwd")  # the image has none: the host's is never read
    with pytest.raises(ConfigError, match="unable to find user app"):
        users.resolve("app", str(root))
    (root / "etc" / "passwd").unlink()
    os.symlink("passwd", root / "etc" / "passwd")  # a loop
    assert users._inside(str(root), "etc/passwd") is None
