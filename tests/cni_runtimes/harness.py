"""Real CNI callers for the tests: cnitool, Podman 4.3 (CNI backend) and containerd 1.6's CRI, each run
against a conflist in a test directory, with its own temporary storage, state and config.

Everything a scenario does happens in a `Host`: a fresh network namespace that plays the node (CNI's
"originalNS", as the reference plugins' own tests do). The runtimes and the plugins they exec run there
(setns only, so they share the test's mount namespace and its /run), so the bridge, veths, firewall rules
and sysctls a plugin makes never reach the test session's namespace and vanish with the Host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REFERENCE_PLUGINS = "/usr/lib/cni"
MINIRUN_CNI = str(Path(sys.executable).parent / "minirun-cni")
PLUGINS = ("bridge", "minirun-cni")  # the conflist `type`s the tests run with

SUBNET = "10.88.0.0/24"
GATEWAY = "10.88.0.1"
OUTSIDE_HOST_IP = "198.51.100.1"  # TEST-NET-2, inside the Host only
OUTSIDE_PEER_IP = "198.51.100.2"


# --- the node ---------------------------------------------------------------------------------------


class Host:
    """A throwaway network namespace that plays the node; `run` executes a command in it."""

    def __init__(self) -> None:
        self.name = f"cnirt-{uuid.uuid4().hex[:8]}"
        self.path = f"/run/netns/{self.name}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.run(["ip", "link", "set", "lo", "up"])

    def argv(self, cmd: list[str]) -> list[str]:
        return ["nsenter", f"--net={self.path}", "--", *cmd]

    def run(self, cmd: list[str], check: bool = True, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run(self.argv(cmd), capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def popen(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.argv(cmd), **kwargs)

    def ip_json(self, *args: str, netns: str | None = None) -> list[dict]:
        cmd = ["ip", "-j", *(["-n", netns] if netns else []), *args]
        return json.loads(self.run(cmd).stdout or "[]")

    def links(self, kind: str | None = None) -> list[dict]:
        found = self.ip_json("-d", "link", "show")
        return [link for link in found if kind is None or link.get("linkinfo", {}).get("info_kind") == kind]

    def veths(self) -> list[str]:
        return [link["ifname"] for link in self.links("veth")]

    def nft(self) -> str:
        return self.run(["nft", "list", "ruleset"]).stdout

    def close(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


@contextlib.contextmanager
def private_var_lib():
    """/var/lib as an overlay whose upper layer is a temporary directory, in the test's own mount namespace:
    what libcni (its result cache, /var/lib/cni), Podman (/var/lib/containers/cache) and any default we
    missed write there goes to the temporary directory, never to the machine's /var/lib."""
    tmp = Path(tempfile.mkdtemp(prefix="minirun-varlib-"))
    (tmp / "upper").mkdir()
    (tmp / "work").mkdir()
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir=/var/lib,upperdir={tmp / 'upper'},workdir={tmp / 'work'}", "/var/lib"],
        check=True,
    )  # fmt: skip
    try:
        yield tmp / "upper"
    finally:
        subprocess.run(["umount", "-l", "/var/lib"], check=True)
        shutil.rmtree(tmp, ignore_errors=True)


# --- the network configuration ---------------------------------------------------------------------------


class Network:
    """A test CNI network: a bin dir holding the plugins, a conf dir holding one conflist, a data dir."""

    def __init__(self, root: Path, plugin: str, name: str = "cnitest", bridge: str = "cnitest0") -> None:
        self.plugin = plugin
        self.name = name
        self.bridge = bridge
        self.bin_dir = root / "bin"
        self.conf_dir = root / "net.d"
        self.data_dir = root / "cni-data"
        for d in (self.bin_dir, self.conf_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        for ref in ("bridge", "host-local", "loopback", "portmap"):
            os.symlink(f"{REFERENCE_PLUGINS}/{ref}", self.bin_dir / ref)
        if plugin == "minirun-cni":
            os.symlink(MINIRUN_CNI, self.bin_dir / "minirun-cni")
        self.conflist = self.conf_dir / f"10-{name}.conflist"
        self.conflist.write_text(json.dumps(self.config(), indent=2))

    def config(self) -> dict:
        return {
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": self.plugin,
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.data_dir),
                    },
                }
            ],
        }

    def address_records(self) -> list[str]:
        """The addresses the plugin holds: files named after an IP anywhere under its data dir (host-local:
        <dataDir>/<net>/<ip>; minirun: <dataDir>/<net>/ipam/<ip>)."""
        found = []
        for path in self.data_dir.rglob("*"):
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(path.name)
                found.append(path.name)
        return sorted(found)


def require_plugin(plugin: str) -> None:
    if plugin == "minirun-cni" and not os.access(MINIRUN_CNI, os.X_OK):
        pytest.skip(f"{MINIRUN_CNI} is not installed (the minirun CNI plugin is not built yet)")


def host_facts(host: Host, net: Network, netns: str, ifname: str = "eth0") -> dict:
    """How the node and one container netns are configured, in plugin-independent terms."""
    bridge = host.ip_json("-d", "addr", "show", "dev", net.bridge)[0]
    bridge_index = bridge["ifindex"]
    veths = [link for link in host.links("veth") if link.get("master") == net.bridge]
    inside = host.ip_json("-d", "addr", "show", "dev", ifname, netns=netns)[0]
    routes = host.ip_json("route", "show", netns=netns)
    lo = host.ip_json("link", "show", "dev", "lo", netns=netns)[0]
    forward = host.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
    return {
        "bridge_kind": bridge.get("linkinfo", {}).get("info_kind"),
        "bridge_up": "UP" in bridge["flags"],
        "bridge_addrs": sorted(f"{a['local']}/{a['prefixlen']}" for a in bridge["addr_info"] if a["family"] == "inet"),
        "veths_on_bridge": len(veths),
        "veth_up": all("UP" in v["flags"] for v in veths),
        "veth_hairpin": [v.get("linkinfo", {}).get("info_slave_data", {}).get("hairpin") for v in veths],
        "veth_peer_is_ifname": inside.get("link_index") is not None or inside.get("link_netnsid") is not None,
        "bridge_index": bridge_index > 0,
        "inside_kind": inside.get("linkinfo", {}).get("info_kind"),
        "inside_up": "UP" in inside["flags"],
        "inside_addrs": [
            (str(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network), a["prefixlen"])
            for a in inside["addr_info"]
            if a["family"] == "inet"
        ],
        "inside_routes": sorted((r["dst"], r.get("gateway"), r.get("dev")) for r in routes),
        "lo_up": "UP" in lo["flags"],
        "ip_forward": forward,
    }


def result_shape(value):
    """A CNI result with every leaf replaced by its type, but the interface indexes kept."""
    if isinstance(value, dict):
        return {k: (v if k == "interface" else result_shape(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [result_shape(v) for v in value]
    return type(value).__name__


# --- outside world (to see masquerade) -------------------------------------------------------------------


class Outside:
    """A namespace behind the Host's uplink0 (198.51.100.1/24) at 198.51.100.2, to see what source a
    container's traffic has once it leaves the node (masquerade: the node's address)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.name = f"{host.name}-out"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        host.run(["ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "eth0", "netns", self.name])
        host.run(["ip", "addr", "add", f"{OUTSIDE_HOST_IP}/24", "dev", "uplink0"])
        host.run(["ip", "link", "set", "uplink0", "up"])
        for cmd in (["addr", "add", f"{OUTSIDE_PEER_IP}/24", "dev", "eth0"], ["link", "set", "eth0", "up"]):
            subprocess.run(["ip", "-n", self.name, *cmd], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)

    def seen_source(self, connect: list[str], port: int = 7777, timeout: float = 10) -> str:
        """Run `connect` (a command that opens a TCP connection to OUTSIDE_PEER_IP:port) and return the
        source address the outside saw."""
        from tests.integration.conftest import listen_in_netns

        listener = listen_in_netns(self.name, port, timeout)  # prints "listening", then the peer's address
        try:
            subprocess.run(connect, capture_output=True, timeout=timeout)
            out, err = listener.communicate(timeout=timeout)
            assert listener.returncode == 0, err
            return out.split()[0]
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()

    def close(self) -> None:
        self.host.run(["ip", "link", "delete", "uplink0"], check=False)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


# --- cnitool ---------------------------------------------------------------------------------------------


class CniTool:
    def __init__(self, binary: Path, host: Host, net: Network) -> None:
        self.binary = str(binary)
        self.host = host
        self.net = net

    def __call__(self, command: str, netns_path: str, check: bool = True, **env) -> subprocess.CompletedProcess:
        cmd = [
            "env",
            f"NETCONFPATH={self.net.conf_dir}",
            f"CNI_PATH={self.net.bin_dir}",
            *(f"{k}={v}" for k, v in env.items()),
            self.binary,
            command,
            self.net.name,
            netns_path,
        ]
        return self.host.run(cmd, check=check)


# --- images ---------------------------------------------------------------------------------------------


def busybox_rootfs(image: str = "busybox") -> Path:
    """The rootfs of the busybox image minirun built into $MINIRUN_DATA_DIR (see images/README.md)."""
    root = Path(os.environ.get("MINIRUN_DATA_DIR", "/var/lib/minirun")) / "images"
    tag = json.loads((root / "tags" / f"{image}:latest.json").read_text())
    return root / "by-id" / tag["id"] / "rootfs"


def docker_archive(rootfs: Path, dest: Path, name: str, entrypoint: list[str]) -> Path:
    """A `docker save`-style tarball of rootfs as one layer, tagged name, with the given Entrypoint."""
    import hashlib
    import io

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for path in sorted(rootfs.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(rootfs)), recursive=False)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "minirun tests: busybox rootfs"}],
    }
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [name], "Layers": ["layer/layer.tar"]}]
    with tarfile.open(dest, "w") as tar:
        for arcname, data in (
            (config_name, config_bytes),
            ("layer/layer.tar", layer_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return dest


# --- Podman ----------------------------------------------------------------------------------------------


class Podman:
    """`podman` with its own containers.conf (CNI backend, the test network dir), storage and tmp dirs."""

    def __init__(self, root: Path, host: Host, net: Network) -> None:
        self.host = host
        self.net = net
        self.root = root
        for d in ("graph", "runroot", "tmp"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "containers.conf").write_text(
            f"""[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{net.bin_dir}"]
network_config_dir = "{net.conf_dir}"
default_network = "{net.name}"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{root / "tmp" / "events.log"}"
tmp_dir = "{root / "tmp"}"
infra_image = "localhost/busybox"
"""
        )
        (root / "storage.conf").write_text(
            f"""[storage]
driver = "overlay"
graphroot = "{root / "graph"}"
runroot = "{root / "runroot"}"
"""
        )
        self.env = [
            f"CONTAINERS_CONF={root / 'containers.conf'}",
            f"CONTAINERS_STORAGE_CONF={root / 'storage.conf'}",
        ]

    def __call__(self, *args: str, check: bool = True, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        return self.host.run(["env", *self.env, "podman", *args], check=check, timeout=timeout, **kwargs)

    def import_rootfs(self, rootfs: Path, name: str = "localhost/busybox") -> None:
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            self("import", "--change", 'CMD ["sleep", "2147483647"]', "-", name, stdin=tar.stdout)
        finally:
            tar.stdout.close()
            tar.wait()

    def cleanup(self) -> None:
        """Remove everything (containers and pods first, so the plugin's DEL runs), then the storage (overlay
        mounts included)."""
        self("pod", "rm", "-a", "-f", "-t", "0", check=False)
        self("rm", "-a", "-f", "-t", "0", check=False)
        self("system", "reset", "-f", check=False)
        # `system reset` unmounts the storage; anything left mounted under root is unmounted here
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f if str(self.root) in line.split()[1]]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)


# --- containerd ------------------------------------------------------------------------------------------

PAUSE_IMAGE = "localhost/minirun-test-pause:1"


class Containerd:
    """containerd 1.6 with its CRI plugin, its own root, state, socket and CNI dirs, run in the Host."""

    def __init__(self, root: Path, host: Host, net: Network) -> None:
        self.root = root
        self.host = host
        self.net = net
        root.mkdir(parents=True, exist_ok=True)
        self.socket = root / "containerd.sock"
        self.config = root / "config.toml"
        self.log = root / "containerd.log"
        self.config.write_text(
            f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{root / "containerd.sock.ttrpc"}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{net.bin_dir}"
    conf_dir = "{net.conf_dir}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"""
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> None:
        self.log_file = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = self.host.popen(
            ["containerd", "--config", str(self.config), "--log-level", "info"],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"containerd exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            if self.socket.exists() and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"containerd did not answer in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def ctr(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return self.host.run(["ctr", "--address", str(self.socket), *args], check=check, **kwargs)

    def import_image(self, archive: Path) -> None:
        self.ctr("-n", "k8s.io", "images", "import", str(archive))

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        # shims left behind (a sandbox not removed) would keep mounts and netns: kill them
        for pid in _pids_mentioning(str(self.root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f if str(self.root) in line.split()[1]]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry))
    return pids


class CriClient:
    """RuntimeService of the CRI v1 API over containerd's socket, through the generated gRPC stubs."""

    def __init__(self, socket: Path, pb2, pb2_grpc) -> None:
        import grpc

        self.pb = pb2
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.runtime = pb2_grpc.RuntimeServiceStub(self.channel)

    def version(self):
        return self.runtime.Version(self.pb.VersionRequest(version="v1"), timeout=10)

    def run_pod_sandbox(self, name: str, log_dir: Path) -> str:
        pb = self.pb
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uuid.uuid4().hex, namespace="minirun-test", attempt=0),
            hostname=name,
            log_directory=str(log_dir),
            linux=pb.LinuxPodSandboxConfig(
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
                )
            ),
        )
        reply = self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=60)
        return reply.pod_sandbox_id

    def status(self, sandbox_id: str):
        return self.runtime.PodSandboxStatus(
            self.pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True), timeout=10
        )

    def netns_path(self, sandbox_id: str) -> str:
        info = json.loads(self.status(sandbox_id).info["info"])
        for ns in info["runtimeSpec"]["linux"]["namespaces"]:
            if ns["type"] == "network":
                return ns["path"]
        raise AssertionError("sandbox has no network namespace path")

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self.runtime.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self.runtime.RemovePodSandbox(self.pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)

    def list_pod_sandbox(self) -> list:
        return list(self.runtime.ListPodSandbox(self.pb.ListPodSandboxRequest(), timeout=10).items)

    def close(self) -> None:
        self.channel.close()
