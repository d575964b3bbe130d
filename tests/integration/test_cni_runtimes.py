"""CNI driven for real: cnitool, Podman 4.3's CNI backend and containerd 1.6's CRI run a conflist whose plugin
is the reference `bridge` (+ `host-local`) or `minirun-cni`, each in a throwaway node namespace, with its own
temporary storage, state and config (tests/cni_runtimes/harness.py). cnitool and the CRI client are built
from Debian's sources at test time (tests/cni_runtimes/tools.py), cached under $MINIRUN_TEST_CACHE.

Select them with `-m cni_runtime`; they run by default.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.cni_runtimes import tools
from tests.cni_runtimes.harness import (
    GATEWAY,
    OUTSIDE_HOST_IP,
    OUTSIDE_PEER_IP,
    PAUSE_IMAGE,
    PLUGINS,
    SUBNET,
    CniTool,
    Containerd,
    CriClient,
    Host,
    Network,
    Outside,
    Podman,
    busybox_rootfs,
    docker_archive,
    host_facts,
    private_var_lib,
    require_plugin,
    result_shape,
)

pytestmark = pytest.mark.cni_runtime


def _tool(build):
    try:
        return build()
    except tools.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module", autouse=True)
def _private_var_lib():
    with private_var_lib() as upper:
        yield upper


@pytest.fixture(scope="session")
def cnitool_binary() -> Path:
    return _tool(tools.cnitool)


@pytest.fixture(scope="session")
def cri_api():
    return _tool(tools.import_cri_api)


@pytest.fixture
def host():
    before = set(os.listdir("/run/netns"))
    node = Host()
    yield node
    leftover_veths = node.veths()
    node.close()
    leftover_netns = set(os.listdir("/run/netns")) - before - {node.name}
    for name in leftover_netns:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    assert not leftover_veths, f"veths left on the node: {leftover_veths}"
    assert not leftover_netns, f"network namespaces left: {sorted(leftover_netns)}"


@pytest.fixture(params=PLUGINS)
def plugin(request) -> str:
    require_plugin(request.param)
    return request.param


@pytest.fixture
def network(plugin: str, tmp_path: Path) -> Network:
    return Network(tmp_path / "cni", plugin)


@pytest.fixture
def container_netns():
    """`ip netns add` namespaces standing for containers (cnitool's usage); deleted afterwards."""
    made = []

    def make() -> str:
        name = f"cnirt-ctr-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def _index(result: dict, name: str, sandbox: bool) -> int:
    for i, iface in enumerate(result["interfaces"]):
        if iface["name"] == name and bool(iface.get("sandbox")) == sandbox:
            return i
    raise AssertionError(f"no interface {name} (sandbox={sandbox}) in {result['interfaces']}")


def _check_result(result: dict, netns_path: str, bridge: str) -> str:
    assert result["cniVersion"] == "1.0.0"
    eth0 = _index(result, "eth0", sandbox=True)
    assert result["interfaces"][eth0]["sandbox"] == netns_path
    _index(result, bridge, sandbox=False)
    assert len(result["ips"]) == 1
    ip = result["ips"][0]
    assert ip["interface"] == eth0
    assert ip["gateway"] == GATEWAY
    address = ipaddress.ip_interface(ip["address"])
    assert address.network == ipaddress.ip_network(SUBNET)
    return str(address.ip)


# --- cnitool ---------------------------------------------------------------------------------------------


def test_cnitool_add_check_del(cnitool_binary, host, network, container_netns):
    """cnitool add / check / del: the result, the node and the netns configured, masquerade seen from
    outside, the address released, DEL idempotent (also once the netns is gone)."""
    cnitool = CniTool(cnitool_binary, host, network)
    outside = Outside(host)
    ns = container_netns()
    path = f"/run/netns/{ns}"
    try:
        result = json.loads(cnitool("add", path).stdout)
        address = _check_result(result, path, network.bridge)
        assert network.address_records() == [address]
        facts = host_facts(host, network, ns)
        assert facts["bridge_addrs"] == [f"{GATEWAY}/24"]
        assert facts["veths_on_bridge"] == 1
        assert ("default", GATEWAY, "eth0") in facts["inside_routes"]
        seen = outside.seen_source(
            ["ip", "netns", "exec", ns, "/usr/bin/python3", "-c",
             f"import socket; socket.create_connection(('{OUTSIDE_PEER_IP}', 7777), timeout=5).recv(10)"]
        )  # fmt: skip
        assert seen == OUTSIDE_HOST_IP, "the outside saw the container's own address: no masquerade"

        check = cnitool("check", path, check=False)
        assert check.returncode == 0, check.stderr + check.stdout

        cnitool("del", path)
        assert network.address_records() == []
        assert host.veths() == ["uplink0"]
        cnitool("del", path)  # again: nothing to do, still success
        subprocess.run(["ip", "netns", "delete", ns], check=True)
        cnitool("del", path)  # the netns is gone (containerd's later DELs)
    finally:
        outside.close()
    assert network.address_records() == []


def test_cnitool_minirun_matches_reference(cnitool_binary, tmp_path, container_netns):
    """The same conflist with the reference bridge + host-local and with minirun-cni: results equal in shape
    (keys, interface indexes), the node and the netns configured the same way, masquerade the same."""
    require_plugin("minirun-cni")
    seen = {}
    for plugin in PLUGINS:
        node = Host()
        outside = Outside(node)
        try:
            network = Network(tmp_path / plugin, plugin)
            cnitool = CniTool(cnitool_binary, node, network)
            ns = container_netns()
            path = f"/run/netns/{ns}"
            result = json.loads(cnitool("add", path).stdout)
            facts = host_facts(node, network, ns)
            source = outside.seen_source(
                ["ip", "netns", "exec", ns, "/usr/bin/python3", "-c",
                 f"import socket; socket.create_connection(('{OUTSIDE_PEER_IP}', 7777), timeout=5).recv(10)"]
            )  # fmt: skip
            cnitool("del", path)
            assert network.address_records() == []
            seen[plugin] = (result, facts, source)
        finally:
            outside.close()
            node.close()
    (ref, ref_facts, ref_source), (mine, mine_facts, mine_source) = seen["bridge"], seen["minirun-cni"]
    assert result_shape(mine) == result_shape(ref)
    assert mine["ips"][0]["address"] == ref["ips"][0]["address"]  # both start at the range's first address
    assert mine["routes"] == ref["routes"]
    assert mine_facts == ref_facts
    assert mine_source == ref_source == OUTSIDE_HOST_IP


# --- Podman ----------------------------------------------------------------------------------------------


@pytest.fixture
def podman(host, network, tmp_path, busybox_image):
    if tools.dpkg_version("podman") is None:
        pytest.skip("Debian package podman is missing (./bootstrap.sh test installs it)")
    engine = Podman(tmp_path / "podman", host, network)
    engine.import_rootfs(busybox_rootfs(busybox_image))
    yield engine
    engine.cleanup()


def _podman_ip(podman: Podman, container: str) -> str:
    out = podman("exec", container, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    return out.split("inet ", 1)[1].split("/", 1)[0]


def test_podman_container_and_pod(podman, network):
    """A container and a pod get addresses from the plugin and reach each other; `rm -f` releases them."""
    podman("run", "-d", "--name", "c1", "--network", network.name, "localhost/busybox")
    podman("pod", "create", "--name", "p1", "--network", network.name)
    podman("run", "-d", "--pod", "p1", "--name", "p1c", "localhost/busybox")
    c1, p1 = _podman_ip(podman, "c1"), _podman_ip(podman, "p1c")
    for address in (c1, p1):
        assert ipaddress.ip_address(address) in ipaddress.ip_network(SUBNET)
    assert c1 != p1
    assert network.address_records() == sorted([c1, p1])
    assert len(podman.host.veths()) == 2

    # reach each other through the bridge, both ways
    for client, peer in (("c1", p1), ("p1c", c1)):
        ping = podman("exec", client, "ping", "-c", "1", "-W", "5", peer, check=False)
        assert ping.returncode == 0, f"{client} cannot reach {peer}: {ping.stdout}{ping.stderr}"

    podman("rm", "-f", "-t", "0", "c1")
    assert network.address_records() == [p1]
    podman("pod", "rm", "-f", "-t", "0", "p1")
    assert network.address_records() == []
    assert podman.host.veths() == []


# --- containerd's CRI ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pause_archive(busybox_image, tmp_path_factory) -> Path:
    """A docker-save tarball of the busybox rootfs whose entrypoint sleeps for ever: the sandbox image."""
    return docker_archive(
        busybox_rootfs(busybox_image),
        tmp_path_factory.mktemp("pause") / "pause.tar",
        PAUSE_IMAGE,
        ["sleep", "2147483647"],
    )


@pytest.fixture
def cri(host, network, tmp_path, pause_archive, cri_api):
    if tools.dpkg_version("containerd") is None:
        pytest.skip("Debian package containerd is missing (./bootstrap.sh test installs it)")
    daemon = Containerd(tmp_path / "containerd", host, network)
    daemon.start()
    client = None
    try:
        daemon.import_image(pause_archive)
        client = CriClient(daemon.socket, *cri_api)
        yield client
        for sandbox in client.list_pod_sandbox():  # whatever a failed test left
            client.stop_pod_sandbox(sandbox.id)
            client.remove_pod_sandbox(sandbox.id)
    finally:
        if client:
            client.close()
        daemon.stop()


def test_containerd_cri_pod_sandboxes(cri, network, host, tmp_path):
    """RunPodSandbox through the CRI: two sandboxes get addresses from the plugin and reach each other;
    StopPodSandbox releases the address (and a second Stop and the Remove, which DEL again, succeed)."""
    version = cri.version()
    assert version.runtime_name == "containerd" and version.runtime_api_version == "v1"
    (tmp_path / "logs").mkdir()
    a = cri.run_pod_sandbox("sandbox-a", tmp_path / "logs")
    b = cri.run_pod_sandbox("sandbox-b", tmp_path / "logs")
    ip_a = cri.status(a).status.network.ip
    ip_b = cri.status(b).status.network.ip
    for address in (ip_a, ip_b):
        assert ipaddress.ip_address(address) in ipaddress.ip_network(SUBNET)
    assert network.address_records() == sorted([ip_a, ip_b])
    netns_a = cri.netns_path(a)
    ping = host.run(["nsenter", f"--net={netns_a}", "busybox", "ping", "-c", "1", "-W", "5", ip_b], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    facts = host_facts(host, network, os.path.basename(netns_a))
    assert ("default", GATEWAY, "eth0") in facts["inside_routes"]

    cri.stop_pod_sandbox(a)
    assert network.address_records() == [ip_b]
    cri.stop_pod_sandbox(a)  # stopping twice is fine (DEL again)
    cri.remove_pod_sandbox(a)
    cri.stop_pod_sandbox(b)
    cri.remove_pod_sandbox(b)
    assert network.address_records() == []
    assert host.veths() == []
    assert cri.list_pod_sandbox() == []
