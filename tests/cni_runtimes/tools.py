"""Test tools built from Debian's sources, at test time, into a cache outside the repository.

- `cnitool`: `cnitool/cnitool.go` of the `golang-github-appc-cni` source package, built with Debian's Go and
  the libcni of `golang-github-appc-cni-dev` (GOPATH mode, /usr/share/gocode).
- the CRI gRPC client: `runtime/v1/api.proto` of k8s.io/cri-api, vendored in the `containerd` source
  package, with its gogoproto options dropped, compiled by grpcio-tools.

The sources come through a private deb-src apt configuration (its own source list, package lists and
cache in a temporary directory, derived from the machine's deb entries): nothing under /etc or /var/lib
changes. Results are cached in `$MINIRUN_TEST_CACHE` (default /var/cache/minirun-tests) under the
versions they were built from, so a rerun costs nothing.

`python -m tests.cni_runtimes.tools` builds both and prints where they are.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("MINIRUN_TEST_CACHE", "/var/cache/minirun-tests"))
GOCODE = "/usr/share/gocode"
CRI_PROTO = "vendor/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto"

# Debian packages these tools (and the runtimes the tests drive) come from; bootstrap.sh installs them.
BUILD_PACKAGES = ("golang-go", "golang-github-appc-cni-dev")
RUNTIME_PACKAGES = ("podman", "containerd", "runc", "containernetworking-plugins")


class Unavailable(Exception):
    """A tool cannot be had on this machine (a package is missing): the message says which."""


def dpkg_version(package: str) -> str | None:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status} ${Version}", package], capture_output=True, text=True
    ).stdout.split()
    return out[-1] if out[:3] == ["install", "ok", "installed"] else None


def require_packages(*packages: str) -> None:
    missing = [p for p in packages if dpkg_version(p) is None]
    if missing:
        raise Unavailable(f"Debian packages missing: {' '.join(missing)} (./bootstrap.sh test installs them)")


def _slug(version: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "_", version)


def deb_src_entries() -> list[tuple[str, str, str]]:
    """(URI, suite, components) of every enabled `deb` entry of the machine's apt sources, as deb-src."""
    entries = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", Path(path).read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.lstrip().startswith("#") or ":" not in line:
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    entries.append((uri, suite, fields.get("components", "")))
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        if not os.path.isfile(path):
            continue
        for line in Path(path).read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], words[2], " ".join(words[3:])))
    # Only Debian's own archive: the sources we want are there, and no other host is asked for anything.
    entries = [e for e in entries if "debian" in e[0]]
    if not entries:
        raise Unavailable("no Debian deb entry in /etc/apt/sources.list* to derive a deb-src entry from")
    return entries


def _in_host_netns() -> list[str]:
    """A prefix that runs apt in the machine's network namespace when we are in the test sandbox's (which
    has no route out; tests/conftest.py): apt reaches the Debian mirror, nothing else does. The machine's
    namespace is found through a process still in it (the one that started pytest, or any other)."""
    sandbox = sys.modules.get("tests.conftest")
    host_inode = getattr(sandbox, "_HOST_NETNS_INODE", None)
    ours = os.stat("/proc/self/ns/net").st_ino
    if host_inode is None or host_inode == ours:
        return []
    candidates = [str(os.getppid())] + [p for p in os.listdir("/proc") if p.isdigit()]
    for pid in candidates:
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == host_inode:
                return ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]
        except OSError:
            continue
    raise Unavailable("in the test sandbox, and no process of the machine's network namespace to fetch sources from")


def fetch_source(package: str, dest: Path) -> Path:
    """Download (not unpack) the source package into dest with a private apt configuration; returns the
    path of its upstream tarball (`*.orig.tar.*`)."""
    with tempfile.TemporaryDirectory(prefix="minirun-debsrc-") as tmp:
        root = Path(tmp)
        (root / "parts").mkdir()
        (root / "lists" / "partial").mkdir(parents=True)
        (root / "cache" / "archives" / "partial").mkdir(parents=True)
        lines = [
            f"deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {uri} {suite} {components}"
            for uri, suite, components in deb_src_entries()
        ]
        (root / "parts" / "debsrc.list").write_text("\n".join(lines) + "\n")
        options = [
            "-o", "Dir::Etc::SourceList=/dev/null",
            "-o", f"Dir::Etc::SourceParts={root / 'parts'}",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::Cache={root / 'cache'}",
            "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip
        apt = [*_in_host_netns(), "apt-get", *options, "-qq"]
        update = subprocess.run([*apt, "update"], capture_output=True, text=True)
        if update.returncode != 0 or not list((root / "lists").glob("*Sources*")):
            raise Unavailable(f"apt-get update (deb-src) failed: {update.stderr.strip()[-500:]}")
        dest.mkdir(parents=True, exist_ok=True)
        got = subprocess.run(
            [*apt, "source", "--download-only", package],
            cwd=dest,
            capture_output=True,
            text=True,
        )
        if got.returncode != 0:
            raise Unavailable(f"apt-get source {package} failed: {got.stderr.strip()[-500:]}")
    tarballs = sorted(dest.glob("*.orig.tar.*"))
    if not tarballs:
        raise Unavailable(f"apt-get source {package}: no upstream tarball in {dest}")
    return tarballs[0]


def extract_member(tarball: Path, suffix: str, dest: Path) -> Path:
    """The one member of tarball whose path ends with suffix (after the top directory), written to dest."""
    with tarfile.open(tarball) as tar:
        for member in tar:
            if member.isfile() and member.name.split("/", 1)[-1] == suffix:
                data = tar.extractfile(member).read()
                break
        else:
            raise Unavailable(f"{suffix} not found in {tarball.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


def _atomic_dir(final: Path, build) -> Path:
    """Run build(tmpdir) and rename tmpdir to final (a concurrent or interrupted build leaves no half)."""
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        tmp.chmod(0o755)
        try:
            tmp.rename(final)
        except OSError:  # someone else finished first
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def cnitool() -> Path:
    """Path of a cnitool binary built from Debian's golang-github-appc-cni sources (cached)."""
    require_packages(*BUILD_PACKAGES)
    cni = dpkg_version("golang-github-appc-cni-dev")
    go = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.split()[2]
    final = CACHE / f"cnitool-{_slug(cni)}-{go}"

    def build(tmp: Path) -> None:
        src = tmp / "src"
        tarball = fetch_source("golang-github-appc-cni", src)
        main = extract_member(tarball, "cnitool/cnitool.go", tmp / "gopath/src/cnitool/cnitool.go")
        env = dict(
            os.environ,
            GO111MODULE="off",
            GOPATH=f"{tmp / 'gopath'}:{GOCODE}",
            GOCACHE=str(tmp / "gocache"),
            GOFLAGS="",
            CGO_ENABLED="0",
        )
        built = subprocess.run(
            ["go", "build", "-o", str(tmp / "cnitool"), "."], cwd=main.parent, env=env, capture_output=True, text=True
        )
        if built.returncode != 0:
            raise RuntimeError(f"go build cnitool failed:\n{built.stderr}")
        shutil.rmtree(src)
        shutil.rmtree(tmp / "gocache", ignore_errors=True)

    return _atomic_dir(final, build) / "cnitool"


def strip_gogoproto(text: str) -> str:
    """api.proto without gogoproto: its import, its file options and its field options."""
    text = re.sub(r'^\s*import\s+"github\.com/gogo/protobuf/gogoproto/gogo\.proto";\s*$', "", text, flags=re.M)
    text = re.sub(r"^\s*option\s+\(gogoproto\.[^;]*;\s*$", "", text, flags=re.M)
    # field options: [(gogoproto.x) = y] alone, or among others in one bracket
    text = re.sub(r"\s*\[\s*\(gogoproto\.[^)]*\)\s*=\s*[^,\]]*\]", "", text)
    text = re.sub(r"\(gogoproto\.[^)]*\)\s*=\s*[^,\]]*,\s*", "", text)
    text = re.sub(r",\s*\(gogoproto\.[^)]*\)\s*=\s*[^,\]]*", "", text)
    if "gogoproto" in text:
        raise RuntimeError("api.proto: a gogoproto reference is left after stripping")
    return text


def cri_api() -> Path:
    """Directory holding `cri_api_pb2.py` and `cri_api_pb2_grpc.py` (package runtime.v1), generated from the
    CRI api.proto of Debian's containerd source package (cached)."""
    require_packages("containerd")
    try:
        import grpc_tools  # noqa: F401
        from grpc_tools import protoc
    except ImportError:
        raise Unavailable("grpcio-tools is not installed in the virtualenv (./bootstrap.sh test installs it)") from None
    from importlib.metadata import version

    final = CACHE / f"cri-api-{_slug(dpkg_version('containerd'))}-grpcio-tools-{version('grpcio-tools')}"

    def build(tmp: Path) -> None:
        src = tmp / "src"
        tarball = fetch_source("containerd", src)
        proto = extract_member(tarball, CRI_PROTO, tmp / "api.proto")
        (tmp / "cri_api.proto").write_text(strip_gogoproto(proto.read_text()))
        include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
        status = protoc.main(
            ["protoc", f"-I{tmp}", f"-I{include}", f"--python_out={tmp}", f"--grpc_python_out={tmp}", "cri_api.proto"]
        )
        if status != 0:
            raise RuntimeError(f"grpc_tools.protoc failed on the stripped api.proto ({status})")
        shutil.rmtree(src)

    return _atomic_dir(final, build)


def import_cri_api():
    """(cri_api_pb2, cri_api_pb2_grpc) modules."""
    path = str(cri_api())
    if path not in sys.path:
        sys.path.insert(0, path)
    import cri_api_pb2
    import cri_api_pb2_grpc

    return cri_api_pb2, cri_api_pb2_grpc


if __name__ == "__main__":
    print("cnitool:", cnitool())
    print("cri api:", cri_api())
