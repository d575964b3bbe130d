"""`minirun image`: the busybox recipe, `docker save` and OCI imports (archives built here with tarfile, no
Docker), hostile and damaged archives refused with nothing left behind, tags, removal and pruning."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from minirun.kernel import proc
from tests.integration.conftest import MINIRUN, minirun

MTIME = 1_600_000_000
CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/bin:/bin", "MODE=test"],
        "Cmd": ["serve", "--port", "80"],
        "Entrypoint": ["/bin/app"],
        "WorkingDir": "/srv",
        "User": "1000:1000",
    },
}


# --- archive builders -----------------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, MTIME, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def tar_of(*members) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def files_tar(files: dict[str, bytes]) -> bytes:
    return tar_of(*(member(name, data=data) for name, data in files.items()))


LAYER_1 = tar_of(
    member("bin/", tarfile.DIRTYPE, mode=0o755),
    member("bin/app", data=b"#!/bin/sh\necho app\n", mode=0o755),
    member("bin/sh", tarfile.SYMTYPE, link="/bin/busybox"),
    member("etc/", tarfile.DIRTYPE, mode=0o755),
    member("etc/keep", data=b"kept\n"),
    member("etc/gone", data=b"whited out\n"),
    member("opt/d/", tarfile.DIRTYPE, mode=0o755),
    member("opt/d/lower", data=b"lower\n"),
    member("dev/console", tarfile.CHRTYPE, mode=0o600),
)
LAYER_2 = tar_of(
    member("etc/.wh.gone"),
    member("opt/d/", tarfile.DIRTYPE, mode=0o755),
    member("opt/d/.wh..wh..opq"),
    member("opt/d/upper", data=b"upper\n"),
    member("srv/", tarfile.DIRTYPE, mode=0o750),
)


def docker_save(layers: list[bytes], *, tags=("test/app:1.0",), config=CONFIG, docker25=False) -> bytes:
    """What `docker save` writes: manifest.json, the config, one tar per layer (Docker >= 25: as OCI blobs,
    gzip-compressed here, plus oci-layout and index.json)."""
    config = dict(config, rootfs={"type": "layers", "diff_ids": [f"sha256:{sha(layer)}" for layer in layers]})
    config_blob = json.dumps(config).encode()
    files: dict[str, bytes] = {}
    if docker25:
        blobs = [gzip.compress(layer, mtime=0) for layer in layers]
        config_path = f"blobs/sha256/{sha(config_blob)}"
        layer_paths = [f"blobs/sha256/{sha(blob)}" for blob in blobs]
        files.update(zip(layer_paths, blobs, strict=True))
        files.update(oci_layout_files(layers, config, name=None))
    else:
        config_path = f"{sha(config_blob)}.json"
        layer_paths = [f"{i:064x}/layer.tar" for i in range(len(layers))]
        files.update(zip(layer_paths, layers, strict=True))
    files[config_path] = config_blob
    files["manifest.json"] = json.dumps(
        [{"Config": config_path, "RepoTags": list(tags), "Layers": layer_paths}]
    ).encode()
    return files_tar(files)


def descriptor(media_type: str, blob: bytes, **extra) -> dict:
    return {"mediaType": media_type, "digest": f"sha256:{sha(blob)}", "size": len(blob), **extra}


def oci_layout_files(
    layers: list[bytes], config: dict = CONFIG, *, name: str | None = "oci/app:2.0", compress: bool = True
) -> dict[str, bytes]:
    """An OCI image layout: index.json -> a nested index with an arm64 and an amd64 manifest -> config, layers."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> bytes:
        blobs[f"blobs/sha256/{sha(data)}"] = data
        return data

    layer_type = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
    manifests = []
    for arch in ("arm64", "amd64"):
        arch_config = dict(config, architecture=arch)
        arch_config["config"] = dict(config["config"], Env=[*config["config"]["Env"], f"ARCH={arch}"])
        arch_config["rootfs"] = {"type": "layers", "diff_ids": [f"sha256:{sha(layer)}" for layer in layers]}
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", blob(json.dumps(arch_config).encode())),
            "layers": [
                descriptor(layer_type, blob(gzip.compress(layer, mtime=0) if compress else layer)) for layer in layers
            ],
        }
        manifests.append(
            descriptor(
                "application/vnd.oci.image.manifest.v1+json",
                blob(json.dumps(manifest).encode()),
                platform={"os": "linux", "architecture": arch},
            )
        )
    nested = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
    annotations = {"org.opencontainers.image.ref.name": name} if name else {}
    top = descriptor(
        "application/vnd.oci.image.index.v1+json", blob(json.dumps(nested).encode()), annotations=annotations
    )
    index = {"schemaVersion": 2, "manifests": [top]}
    return {
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": json.dumps(index).encode(),
        **blobs,
    }


def write_dir(files: dict[str, bytes], directory: Path) -> Path:
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return directory


# --- fixtures and checks --------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store of this test's own (the session's busybox lives in the shared one); returns images_dir."""
    monkeypatch.setenv("MINIRUN_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data" / "images"


def import_bytes(archive: bytes, tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / "image.tar"
    path.write_bytes(archive)
    return minirun("image", "import", str(path), *args, env=env)


def leftovers(images_dir: Path) -> list[str]:
    """What an import that failed must not leave: images, tags, staging dirs (the lock file may stay)."""
    if not images_dir.exists():
        return []
    found = [name for name in os.listdir(images_dir) if name != ".lock"]
    return [name for name in found if name not in ("by-id", "tags") or os.listdir(images_dir / name)]


def inspect(ref: str) -> dict:
    result = minirun("image", "inspect", ref)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def rootfs(ref: str) -> Path:
    return Path(inspect(ref)["RootFS"]["Path"])


# --- the busybox recipe ---------------------------------------------------------------------------------


def test_busybox_recipe(busybox_image):
    image = inspect(busybox_image)
    assert image["RepoTags"][0] == "busybox:latest" or "busybox:latest" in image["RepoTags"]
    assert image["Config"]["Cmd"] == ["sh"]
    assert image["Config"]["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    root = Path(image["RootFS"]["Path"])
    busybox = (root / "bin" / "busybox").stat()
    assert busybox.st_nlink > 100  # every applet is a hardlink to it
    assert (root / "bin" / "sh").stat().st_ino == busybox.st_ino
    assert (root / "usr" / "bin" / "wget").stat().st_ino == busybox.st_ino
    assert oct((root / "root").stat().st_mode & 0o7777) == "0o700"
    assert oct((root / "tmp").stat().st_mode & 0o7777) == "0o1777"
    for directory in ("home", "var", "proc", "sys", "dev", "etc"):
        assert (root / directory).is_dir()
    users = [line.split(":")[0] for line in (root / "etc" / "passwd").read_text().splitlines()]
    assert users == ["root", "daemon", "bin", "sys", "sync", "mail", "www-data", "operator", "nobody"]
    assert (root / "etc" / "group").is_file() and (root / "etc" / "nsswitch.conf").is_file()
    # A static binary, so it runs with nothing but the image around it.
    ran = subprocess.run(["chroot", str(root), "/bin/sh", "-c", "id -un; ls /"], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout.split()[0] == "root", ran.stderr
    listing = minirun("image", "ls")
    assert listing.returncode == 0 and any(
        line.split()[:3] == ["busybox", "latest", image["Id"][7:19]] for line in listing.stdout.splitlines()
    ), listing.stdout


def test_rebuild_is_the_same_image_and_tags_are_names(busybox_image):
    first = inspect(busybox_image)["Id"]
    rebuilt = minirun("image", "build", "images/busybox", "--tag", "bb:test", cwd=Path(__file__).parents[2])
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.split() == [first, "bb:test"]  # same content, same ID
    assert inspect("bb:test")["RepoTags"] == ["bb:test", "busybox:latest"]
    assert inspect(first[7:19])["Id"] == first and inspect(first)["Id"] == first
    assert minirun("image", "rm", "bb:test").returncode == 0  # only untags: busybox still names it
    assert inspect(busybox_image)["Id"] == first and os.path.isdir(inspect(busybox_image)["RootFS"]["Path"])
    missing = minirun("image", "inspect", "bb:test")
    assert missing.returncode == 1
    assert missing.stderr == (
        'minirun: error: no such image "bb:test"; '
        "see 'minirun image ls'; build one with 'minirun image build images/busybox'\n"
    )


def test_build_errors_are_one_line(store: Path, tmp_path: Path):
    result = minirun("image", "build", "no-such-recipe")
    assert result.returncode == 1 and 'no recipe "no-such-recipe"' in result.stderr and "busybox" in result.stderr
    recipe = tmp_path / "bad"
    recipe.mkdir()
    (recipe / "image.toml").write_text('name = "bad"\n[config]\nCmd = "sh"\n')
    result = minirun("image", "build", str(recipe))
    assert result.returncode == 1 and "Cmd must be a list of strings" in result.stderr
    (recipe / "image.toml").write_text('name = "bad"\n[[copy]]\nfrom = "/no/such/bin"\npackage = "pkg"\n')
    result = minirun("image", "build", str(recipe))
    assert (
        result.returncode == 1 and "/no/such/bin not found" in result.stderr and "apt-get install pkg" in result.stderr
    )
    assert len(result.stderr.splitlines()) == 1 and leftovers(store) == []


# --- imports ---------------------------------------------------------------------------------------------


def check_app_rootfs(root: Path) -> None:
    assert (root / "bin" / "app").read_bytes() == b"#!/bin/sh\necho app\n"
    assert oct((root / "bin" / "app").stat().st_mode & 0o777) == "0o755"
    assert (root / "bin" / "app").stat().st_mtime == MTIME
    assert os.readlink(root / "bin" / "sh") == "/bin/busybox"  # the image's own /bin, kept as it is
    assert sorted(os.listdir(root / "etc")) == ["keep"]  # etc/gone whited out
    assert sorted(os.listdir(root / "opt" / "d")) == ["upper"]  # opaque: the lower layer's content is gone
    assert oct((root / "srv").stat().st_mode & 0o777) == "0o750"
    assert not (root / "dev" / "console").exists()


def test_docker_save_two_layers(store: Path, tmp_path: Path):
    result = import_bytes(docker_save([LAYER_1, LAYER_2]), tmp_path)
    assert result.returncode == 0, result.stderr
    image_id, name = result.stdout.split()
    assert name == "test/app:1.0"
    assert "skipped 1 device node" in result.stderr
    check_app_rootfs(rootfs("test/app:1.0"))
    image = inspect("test/app:1.0")
    assert image["Id"] == image_id and image["RepoTags"] == ["test/app:1.0"]
    assert image["Config"] == {
        "Env": ["PATH=/usr/bin:/bin", "MODE=test"],
        "Cmd": ["serve", "--port", "80"],
        "Entrypoint": ["/bin/app"],
        "WorkingDir": "/srv",
        "User": "1000:1000",
    }
    rows = [json.loads(line) for line in minirun("image", "ls", "--format", "json").stdout.splitlines()]
    assert [(r["Repository"], r["Tag"], r["ID"]) for r in rows] == [("test/app", "1.0", image_id[7:19])]
    assert sorted(os.listdir(store)) == [".lock", "by-id", "tags"]


def test_docker25_save_is_oci_and_manifest_json(store: Path, tmp_path: Path):
    result = import_bytes(docker_save([LAYER_1, LAYER_2], docker25=True), tmp_path, "--name", "renamed")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == "renamed:latest"
    check_app_rootfs(rootfs("renamed"))


@pytest.mark.parametrize("form", ["directory", "tar", "stdin"])
def test_oci_layout(store: Path, tmp_path: Path, form: str):
    files = oci_layout_files([LAYER_1, LAYER_2])
    if form == "directory":
        result = minirun("image", "import", str(write_dir(files, tmp_path / "layout")))
    elif form == "tar":
        result = import_bytes(files_tar(files), tmp_path)
    else:
        result = subprocess.run([MINIRUN, "image", "import", "-"], input=files_tar(files), capture_output=True)
        result = subprocess.CompletedProcess(
            result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == "oci/app:2.0"  # org.opencontainers.image.ref.name
    check_app_rootfs(rootfs("oci/app:2.0"))
    assert inspect("oci/app:2.0")["Config"]["Env"][-1] == "ARCH=amd64"  # this machine's platform was picked
    assert not [name for name in os.listdir(store) if name.startswith(".tmp-")]


def test_layout_with_two_images_is_chosen_from_by_name(store: Path, tmp_path: Path):
    one, two = oci_layout_files([LAYER_1], name="one:1"), oci_layout_files([LAYER_2], name="two:2")
    tops = json.loads(one["index.json"])["manifests"] + json.loads(two["index.json"])["manifests"]
    layout = write_dir({**one, **two, "index.json": json.dumps({"manifests": tops}).encode()}, tmp_path / "layout")
    result = minirun("image", "import", str(layout))
    assert result.returncode == 1 and "index.json holds 2 images (one:1, two:2)" in result.stderr, result.stderr
    result = minirun("image", "import", str(layout), "--name", "two:2")
    assert result.returncode == 0 and result.stdout.split()[1] == "two:2", result.stderr
    assert sorted(os.listdir(rootfs("two:2") / "opt" / "d")) == ["upper"] and not (rootfs("two:2") / "bin").exists()


def test_uncompressed_oci_layers_and_config_defaults(store: Path, tmp_path: Path):
    bare = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]}}
    files = oci_layout_files([LAYER_1], bare, name="bare", compress=False)
    result = minirun("image", "import", str(write_dir(files, tmp_path / "layout")))
    assert result.returncode == 0, result.stderr
    config = inspect("bare")["Config"]
    assert config == {"Env": ["PATH=/bin", "ARCH=amd64"], "Cmd": None, "Entrypoint": None, "WorkingDir": "", "User": ""}


# --- refused archives ------------------------------------------------------------------------------------


HOSTILE = {
    "dotdot": ([member("../etc/x", data=b"x")], 'layer 1: entry "../etc/x" escapes the image root'),
    "absolute": ([member("/etc/x", data=b"x")], 'layer 1: entry "/etc/x" is an absolute path'),
    "symlink-then-write": (
        [member("evil", tarfile.SYMTYPE, link="/tmp"), member("evil/pwned", data=b"x")],
        'layer 1: entry "evil/pwned" goes through the symlink "evil"',
    ),
    "escaping-symlink": (
        [member("a", tarfile.SYMTYPE, link="../../..")],
        'layer 1: entry "a" is a symlink to "../../..", which escapes the image root',
    ),
    "hardlink-host-file": (
        [member("pw", tarfile.LNKTYPE, link="/etc/passwd")],
        'layer 1: entry "pw" is a hardlink to "/etc/passwd", which is outside the image root',
    ),
    "hardlink-dotdot": (
        [member("x", tarfile.LNKTYPE, link="../x")],
        'layer 1: entry "x" is a hardlink to "../x", which is outside the image root',
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_leave_nothing(store: Path, tmp_path: Path, case: str):
    members, message = HOSTILE[case]
    before = set(os.listdir("/tmp"))
    result = import_bytes(docker_save([tar_of(*members)]), tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"minirun: error: {message}; ")
    assert len(result.stderr.splitlines()) == 1
    assert leftovers(store) == []
    assert set(os.listdir("/tmp")) == before and not os.path.exists("/etc/x")


def test_second_layer_is_named(store: Path, tmp_path: Path):
    result = import_bytes(docker_save([LAYER_1, tar_of(member("../../x", data=b"x"))]), tmp_path)
    assert result.returncode == 1 and 'layer 2: entry "../../x" escapes the image root' in result.stderr
    assert leftovers(store) == []


def test_truncated_tarball(store: Path, tmp_path: Path):
    archive = docker_save([LAYER_1, LAYER_2])
    result = import_bytes(archive[: len(archive) * 2 // 3], tmp_path)
    assert result.returncode == 1 and "truncated" in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert leftovers(store) == []


def test_truncated_gzip_layer(store: Path, tmp_path: Path):
    files = oci_layout_files([LAYER_1])
    layer_path = next(p for p, d in files.items() if d[:2] == b"\x1f\x8b")
    files[layer_path] = files[layer_path][:-40]
    result = import_bytes(files_tar(files), tmp_path)
    assert result.returncode == 1 and "layer 1" in result.stderr and "truncated" in result.stderr, result.stderr
    assert leftovers(store) == []


def wrong_diff_id_archive(layer: bytes) -> bytes:
    """A docker save tarball whose config names another uncompressed layer (diff_id) than `layer`."""
    config = dict(CONFIG, rootfs={"type": "layers", "diff_ids": [f"sha256:{sha(b'other')}"]})
    config_blob = json.dumps(config).encode()
    manifest = [{"Config": f"{sha(config_blob)}.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]
    return files_tar(
        {
            "manifest.json": json.dumps(manifest).encode(),
            f"{sha(config_blob)}.json": config_blob,
            "l/layer.tar": layer,
        }
    )


def test_digest_mismatches(store: Path, tmp_path: Path):
    files = oci_layout_files([LAYER_1])
    layer_path = next(p for p, d in files.items() if d[:2] == b"\x1f\x8b")
    files[layer_path] = gzip.compress(tar_of(member("bin/app", data=b"tampered")), mtime=0)
    result = import_bytes(files_tar(files), tmp_path)
    assert result.returncode == 1
    assert "layer 1: content does not match its digest (expected sha256:" in result.stderr, result.stderr
    # docker save: the config's diff_ids name the uncompressed layers
    archive = wrong_diff_id_archive(LAYER_1)
    result = import_bytes(archive, tmp_path)
    assert result.returncode == 1 and "layer 1 (uncompressed): content does not match its digest" in result.stderr
    assert leftovers(store) == []


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"manifest.json": b"[{"}, "manifest.json is not valid JSON"),
        ({"manifest.json": b'[{"Config": "c.json", "Layers": []}]'}, 'the archive has no "c.json"'),
        ({"hello": b"x"}, "not an image archive"),
        ({"index.json": b"{}"}, "index.json without oci-layout"),
    ],
)
def test_malformed_archives(store: Path, tmp_path: Path, files: dict, message: str):
    result = import_bytes(files_tar(files), tmp_path)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert leftovers(store) == []


def test_zstd_and_nameless_archives(store: Path, tmp_path: Path):
    files = oci_layout_files([LAYER_1], compress=False)
    index = json.loads(files["index.json"])
    nested_path = "blobs/sha256/" + index["manifests"][0]["digest"][7:]
    nested = json.loads(files[nested_path])
    for descriptor_ in nested["manifests"]:
        manifest_path = "blobs/sha256/" + descriptor_["digest"][7:]
        manifest = json.loads(files[manifest_path])
        manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
        files[manifest_path] = json.dumps(manifest).encode()  # (digests now differ; zstd is refused first)
        descriptor_["digest"] = f"sha256:{sha(files[manifest_path])}"
        files["blobs/sha256/" + sha(files[manifest_path])] = files[manifest_path]
    files[nested_path] = json.dumps(nested).encode()
    index["manifests"][0]["digest"] = f"sha256:{sha(files[nested_path])}"
    files["blobs/sha256/" + sha(files[nested_path])] = files[nested_path]
    files["index.json"] = json.dumps(index).encode()
    result = import_bytes(files_tar(files), tmp_path)
    assert result.returncode == 1 and "layer 1 is zstd-compressed" in result.stderr, result.stderr
    nameless = import_bytes(docker_save([LAYER_1], tags=()), tmp_path)
    assert nameless.returncode == 1
    assert nameless.stderr == "minirun: error: the archive does not name its image; name it with --name NAME[:TAG]\n"
    assert import_bytes(docker_save([LAYER_1], tags=()), tmp_path, "--name", "Bad Name").returncode == 1
    assert minirun("image", "import", str(tmp_path / "missing.tar")).returncode == 1
    assert leftovers(store) == []


# --- tags, removal, pruning -----------------------------------------------------------------------------


def fake_container(state_dir: Path, name: str, image_id: str) -> Path:
    """A container record as the runtime writes it, owned by this (live) process so gc leaves it alone."""
    record = {
        "id": sha(name.encode())[:12],
        "name": name,
        "status": "exited",
        "owner": {"pid": os.getpid(), "started": proc.start_time(os.getpid())},
        "image": {"id": image_id, "name": "app:latest"},
    }
    path = state_dir / "containers" / f"{record['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_retag_rm_and_images_in_use(store: Path, tmp_path: Path, state_dir: Path):
    first = import_bytes(docker_save([LAYER_1], tags=("app",)), tmp_path).stdout.split()[0][7:]
    assert minirun("image", "import", str(tmp_path / "image.tar"), "--name", "app:other").returncode == 0
    record = fake_container(state_dir, "web", first)
    try:
        # re-importing "app" with new content retags it; the old image keeps a tag (app:other) and a user
        second = import_bytes(docker_save([LAYER_2], tags=("app",)), tmp_path).stdout.split()[0][7:]
        assert second != first and inspect("app")["Id"] == f"sha256:{second}"
        assert minirun("image", "rm", "app:other").returncode == 1  # its last tag, and "web" uses it
        refused = minirun("image", "rm", "app:other")
        assert refused.stderr == (
            "minirun: error: image \"app:other\" is used by container web; remove it first with 'minirun rm -f web'\n"
        )
        assert inspect(first)["UsedBy"] == ["web"]
        # retag app:other too: the old image is untagged but kept while "web" uses it
        assert import_bytes(docker_save([LAYER_2], tags=("app:other",)), tmp_path).returncode == 0
        rows = [json.loads(line) for line in minirun("image", "ls", "--format", "json").stdout.splitlines()]
        assert ("<none>", "<none>", first[:12]) in [(r["Repository"], r["Tag"], r["ID"]) for r in rows]
    finally:
        record.unlink()
    from minirun.runtime import image_admin

    assert image_admin.prune_unused() == [first]  # what the runtime calls after removing a container
    assert sorted(os.listdir(store / "by-id")) == [second]
    assert minirun("image", "rm", second[:8]).returncode == 0  # by ID: every tag goes with it
    assert os.listdir(store / "by-id") == [] and leftovers(store) == []
    assert minirun("image", "ls").stdout.splitlines() == ["REPOSITORY   TAG   IMAGE ID   CREATED   SIZE"]


def test_stale_staging_dirs_are_swept(store: Path, tmp_path: Path):
    """Issue 13: a staging dir left by a killed import was swept only once two minutes old, so the retry
    right after the kill left it (a half-imported rootfs) behind. A dead writer's staging dir, however young,
    and a dead writer's temporary tag file go with the next command that takes the store lock; a dir whose
    writer holds its flock stays."""
    dead = store / ".tmp-killed-import"
    (dead / "image" / "rootfs").mkdir(parents=True)
    (store / "tags").mkdir()
    dead_tag = store / "tags" / ".app:1.json.12345.tmp"
    dead_tag.write_text("{")
    in_progress = store / ".tmp-in-progress"
    in_progress.mkdir()
    writer = os.open(in_progress, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(writer, fcntl.LOCK_EX)
        assert import_bytes(docker_save([LAYER_1]), tmp_path).returncode == 0
        assert not dead.exists() and not dead_tag.exists() and in_progress.exists()
    finally:
        os.close(writer)
    in_progress.rmdir()


# --- imported images run --------------------------------------------------------------------------------

BUSYBOX = Path("/bin/busybox")
RUNNABLE_LAYER_1 = tar_of(
    member("bin/", tarfile.DIRTYPE, mode=0o755),
    member("bin/busybox", data=BUSYBOX.read_bytes() if BUSYBOX.exists() else b"", mode=0o755),
    member("bin/sh", tarfile.SYMTYPE, link="/bin/busybox"),
    member(
        "bin/app", data=b'#!/bin/sh\necho "app $*"; busybox id -u; pwd; echo "$MODE"; busybox ls /etc\n', mode=0o755
    ),
    member("etc/", tarfile.DIRTYPE, mode=0o755),
    member("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"),
    member("etc/keep", data=b"kept\n"),
    member("etc/gone", data=b"whited out\n"),
)
RUNNABLE_LAYER_2 = tar_of(member("etc/.wh.gone"), member("srv/", tarfile.DIRTYPE, mode=0o755))


@pytest.mark.skipif(not BUSYBOX.exists(), reason="needs Debian's busybox-static")
@pytest.mark.parametrize("form", ["docker-save", "oci-directory"])
def test_imported_images_run_with_their_config(store: Path, tmp_path: Path, form: str):
    """The config's Entrypoint, Cmd, Env, WorkingDir and User are the run's defaults; the whiteout holds."""
    layers = [RUNNABLE_LAYER_1, RUNNABLE_LAYER_2]
    if form == "docker-save":
        imported = import_bytes(docker_save(layers, tags=("run/app:1",)), tmp_path)
        name = "run/app:1"
    else:
        imported = minirun("image", "import", str(write_dir(oci_layout_files(layers), tmp_path / "layout")))
        name = "oci/app:2.0"
    assert imported.returncode == 0, imported.stderr
    result = minirun("run", "--rm", "--image", name)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == ["app serve --port 80", "1000", "/srv", "test"], result.stdout
    assert "keep" in lines[4:] and "gone" not in lines[4:]
    # a CMD replaces the image's Cmd but keeps its Entrypoint; --entrypoint replaces both
    assert minirun("run", "--rm", "--image", name, "other").stdout.splitlines()[0] == "app other"
    entry = minirun("run", "--rm", "--image", name, "--entrypoint", "/bin/busybox", "echo", "direct")
    assert entry.stdout == "direct\n", entry.stderr
    assert minirun("image", "rm", name).returncode == 0


# --- hostile archives: deep trees, bombs, sparse files, bad digests (issue 12, holes 5 and 9) -----------

DEEP = 1500


def deep_layer(depth: int = DEEP) -> bytes:
    path = "/".join(["d"] * depth)
    return tar_of(*(member("/".join(["d"] * n) + "/", tarfile.DIRTYPE, mode=0o755) for n in range(1, depth + 1)),
                  member(f"{path}/bottom", data=b"reached\n"))  # fmt: skip


def depth_of(root: Path) -> int:
    from minirun.fs import tree_walk

    return max(entry.path.count(b"/") for entry in tree_walk.walk(str(root)))


def test_archive_and_recipe_1500_levels_deep(store: Path, tmp_path: Path):
    """Hole 5: an image archive 1500 levels deep made `image build/import` raise RecursionError. Both
    import (a docker save tarball) and build (a recipe whose rootfs/ is that deep) store it, and it goes
    again with `image rm`."""
    imported = import_bytes(docker_save([deep_layer()], tags=("deep/import:1",)), tmp_path)
    assert imported.returncode == 0 and "Traceback" not in imported.stderr, imported.stderr
    assert depth_of(rootfs("deep/import:1")) == DEEP + 1
    recipe = tmp_path / "recipe"
    (recipe / "rootfs").mkdir(parents=True)
    (recipe / "image.toml").write_text('name = "deep/build:1"\n[config]\nCmd = ["sh"]\n')
    with tarfile.open(fileobj=io.BytesIO(deep_layer())) as tar:
        tar.extractall(recipe / "rootfs")  # noqa: S202 - our own archive
    built = minirun("image", "build", str(recipe))
    assert built.returncode == 0 and "Traceback" not in built.stderr, built.stderr
    assert depth_of(rootfs("deep/build:1")) == DEEP + 1
    for name in ("deep/import:1", "deep/build:1"):
        assert minirun("image", "rm", name).returncode == 0
    assert leftovers(store) == []


MIB = 1 << 20


@pytest.fixture
def small_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A 64 MiB tmpfs as the data root: an import that writes what it should not runs out of it at once."""
    data = tmp_path / "small-data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(data)], check=True)
    monkeypatch.setenv("MINIRUN_DATA_DIR", str(data))
    monkeypatch.delenv("MINIRUN_MIN_FREE_BYTES", raising=False)
    try:
        yield data
    finally:
        subprocess.run(["umount", str(data)], check=True)


def used_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def import_watching_usage(archive: bytes, tmp_path: Path, data: Path, env: dict | None = None):
    """Import `archive` while sampling how much of the data root is used; returns (result, peak bytes)."""
    path = tmp_path / "image.tar"
    path.write_bytes(archive)
    process = subprocess.Popen(
        [MINIRUN, "image", "import", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, **(env or {})),
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, used_bytes(data))
        time.sleep(0.001)
    stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), peak


def zeros_layer(size: int, name: str = "zeros") -> bytes:
    return tar_of(member(name, data=bytes(size)))


def test_gzip_bomb_is_refused_before_writing(small_store: Path, tmp_path: Path):
    """Hole 9: a 1 MiB gzip layer expanded to 1 GiB on the data root. Now what a layer's tar headers say
    it expands to is checked against the free space (less a margin) before a byte is written: a layer of
    well under 1 MiB compressed that expands to 200 MiB is refused in one line, and nothing is stored."""
    archive = docker_save([zeros_layer(200 * MIB)], docker25=True)
    assert len(archive) < MIB
    baseline = used_bytes(small_store)
    result, peak = import_watching_usage(archive, tmp_path, small_store)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert "expands to at least 200.0 MiB" in line and "nothing was stored" in line, line
    assert "MINIRUN_MIN_FREE_BYTES" in line
    assert peak - baseline < MIB, f"{peak - baseline} bytes were written before the refusal"
    assert leftovers(small_store / "images") == []
    assert used_bytes(small_store) == baseline


def test_free_space_margin(small_store: Path, tmp_path: Path):
    """Hole 9: the import leaves a margin of free space on the data root (MINIRUN_MIN_FREE_BYTES, else 5%
    of the filesystem up to 1 GiB): a 20 MiB layer fits a 64 MiB data root, and is refused when the
    margin asks for 50 MiB to stay free."""
    archive = docker_save([zeros_layer(20 * MIB)], tags=("fits/app:1",))
    refused = import_bytes(archive, tmp_path, env={"MINIRUN_MIN_FREE_BYTES": str(50 * MIB)})
    assert refused.returncode == 1 and "minirun keeps 50.0 MiB" in refused.stderr, refused.stderr
    assert leftovers(small_store / "images") == []
    bad = import_bytes(archive, tmp_path, env={"MINIRUN_MIN_FREE_BYTES": "lots"})
    assert bad.returncode == 1 and 'MINIRUN_MIN_FREE_BYTES="lots" is not a byte count' in bad.stderr, bad.stderr
    stored = import_bytes(archive, tmp_path)
    assert stored.returncode == 0, stored.stderr
    assert minirun("image", "rm", "fits/app:1").returncode == 0


def gnu_tar_sparse_layer(tmp_path: Path, tar_format: str) -> bytes:
    """A layer made by GNU tar --sparse: a 1 GiB file with two bytes of data, and 40 MiB of plain zeros."""
    source = tmp_path / f"sparse-src-{tar_format}"
    source.mkdir()
    with open(source / "big", "wb") as f:
        f.truncate(1 << 30)
        f.seek(500_000_000)
        f.write(b"middle")
        f.seek((1 << 30) - 3)
        f.write(b"end")
    (source / "zeros").write_bytes(bytes(40 * MIB))
    layer = tmp_path / f"sparse-{tar_format}.tar"
    subprocess.run(
        ["tar", "--sparse", f"--format={tar_format}", "-C", str(source), "-cf", str(layer), "big", "zeros"],
        check=True,
    )
    return layer.read_bytes()


@pytest.mark.parametrize("tar_format", ["gnu", "posix"])
def test_sparse_files_stay_sparse(small_store: Path, tmp_path: Path, tar_format: str):
    """Hole 9: a 20 KiB sparse layer wrote 1 GiB (holes not kept). A sparse member (GNU and pax sparse
    headers) and a plain member of zeros are written as holes: a 1 GiB file and 40 MiB of zeros are
    imported onto a 64 MiB data root, with their content intact."""
    archive = docker_save([gnu_tar_sparse_layer(tmp_path, tar_format)], tags=("sparse/app:1",))
    assert len(archive) < 42 * MIB
    imported = import_bytes(archive, tmp_path)
    assert imported.returncode == 0, imported.stderr
    root = rootfs("sparse/app:1")
    big = os.stat(root / "big")
    assert big.st_size == 1 << 30 and big.st_blocks * 512 <= 64 * 1024, big
    with open(root / "big", "rb") as f:
        f.seek(500_000_000)
        assert f.read(6) == b"middle"
        f.seek((1 << 30) - 3)
        assert f.read() == b"end"
    zeros = os.stat(root / "zeros")
    assert zeros.st_size == 40 * MIB and zeros.st_blocks == 0, zeros
    assert used_bytes(small_store) < 8 * MIB
    assert minirun("image", "rm", "sparse/app:1").returncode == 0
    assert leftovers(small_store / "images") == []


def test_bad_digests_are_refused_before_any_byte_is_written(small_store: Path, tmp_path: Path):
    """Hole 9: 968 MB were written before a bad layer digest was refused. A blob that does not match its
    descriptor's digest is refused before it is even decompressed (here a 200 MiB layer that, extracted,
    would have filled the 64 MiB data root first), and an uncompressed layer that does not match its
    diff_id is refused before extraction: the data root's usage never grows."""
    files = oci_layout_files([zeros_layer(200 * MIB)])
    for path, data in list(files.items()):
        if data[:2] == b"\x1f\x8b":  # the layer blob: same size, other content
            files[path] = gzip.compress(zeros_layer(200 * MIB, name="other"), mtime=0)
    baseline = used_bytes(small_store)
    result, peak = import_watching_usage(files_tar(files), tmp_path, small_store, {"MINIRUN_MIN_FREE_BYTES": "0"})
    assert result.returncode == 1, result.stderr
    assert "layer 1: content does not match its digest (expected sha256:" in result.stderr, result.stderr
    assert peak - baseline < MIB, f"{peak - baseline} bytes were written before the refusal"

    archive = wrong_diff_id_archive(zeros_layer(40 * MIB))
    result, peak = import_watching_usage(archive, tmp_path, small_store, {"MINIRUN_MIN_FREE_BYTES": "0"})
    assert result.returncode == 1 and "layer 1 (uncompressed): content does not match its digest" in result.stderr
    assert peak - baseline < MIB, f"{peak - baseline} bytes were written before the refusal"
    assert leftovers(small_store / "images") == []
    assert used_bytes(small_store) == baseline


def test_a_huge_manifest_is_refused_before_it_fills_memory(store: Path, tmp_path: Path):
    """Review of hole 9: a 400 KB archive whose manifest.json was 400 MiB of spaces took 864 MB of RAM to
    read. JSON files of an image are capped at 4 MiB (registries refuse bigger manifests)."""
    archive = tar_of(member("manifest.json", data=b" " * (5 << 20) + b"[]"))
    result = import_bytes(archive, tmp_path)
    assert result.returncode == 1 and "manifest.json in the archive is over 4 MiB" in result.stderr, result.stderr
    assert leftovers(store) == []


def test_stdin_is_not_spooled_past_the_free_space_margin(store: Path, tmp_path: Path):
    """Review of hole 9: `image import -` copied stdin onto the data root with no free-space check, filled
    it and died with a traceback. The copy stops at the margin, with one line, and nothing is stored."""
    env = {"MINIRUN_MIN_FREE_BYTES": str(1 << 62)}  # no room at all: refused at the first megabyte
    result = minirun("image", "import", "-", input="\0" * (8 << 20), env=env)
    assert result.returncode == 1 and "the archive on stdin" in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert leftovers(store) == []
