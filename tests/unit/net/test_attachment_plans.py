"""Golden Step lists of net/attachment.py and net/bridge.py (issue 14 C14): the plans runtime and minirun-cni
build, as [(name, explain)], computed with a dry-run context (no sockets, nothing applied) and compared with
tests/golden/attach_*.txt.

The holes: step names and the `step k/N` count are user-visible (--explain, --dry-run, CNI's error "step
veth"), and runtime and CNI used to build their attachments separately: a change to the one shared plan could
silently change either output. Each plan here is pinned whole, with the `none` firewall driver (no ruleset
involved) and with `nft` (whose scripts are what --explain shows). MINIRUN_UPDATE_GOLDEN=1 rewrites the files
after an intended change; review the diff.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from minirun.net import attachment, bridge
from minirun.net.attachment import Attachment, AttachOptions, Detach
from minirun.net.firewall import select_driver
from minirun.net.ipam import AddressStore
from minirun.net.network import Network, default_network
from minirun.net.ports import PortMapping
from minirun.plan import Step

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
CONTAINER_ID = "0123456789ab"
MAPPINGS = (PortMapping("0.0.0.0", 8080, 80), PortMapping("127.0.0.1", 5353, 53, "udp"))
CNI_NETWORK = Network(
    name="cni-podnet",
    bridge="cni0",
    subnet=ipaddress.IPv4Network("10.244.0.0/24"),
    gateway=ipaddress.IPv4Address("10.244.0.1"),
    mtu=1500,
)


def render(steps: list[Step]) -> str:
    lines = []
    for number, step in enumerate(steps, 1):
        lines.append(f"step {number}/{len(steps)}: {step.name}")
        lines += [f"    {line}" for text in step.explain() for line in text.splitlines()]
    return "\n".join([*lines, ""])


def check_golden(name: str, steps: list[Step]) -> None:
    path = GOLDEN / f"{name}.txt"
    text = render(steps)
    if os.environ.get("MINIRUN_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs (MINIRUN_UPDATE_GOLDEN=1 rewrites it)"


def runtime_attach(driver_name: str, mappings: tuple = MAPPINGS) -> list[Step]:
    """As container.create and pod create plan a bridge attach (runtime/network_plan.py bridge_steps)."""
    net, firewall = default_network(), select_driver(driver_name)
    store = AddressStore("/run/minirun/ipam/minirun")
    ctx = attachment.dry_run_context("/proc/<pid>/ns/net", store, firewall)
    att = Attachment(net, "veth0123456789", 1500)
    opts = AttachOptions(ipam_owner=CONTAINER_ID, port_owner=CONTAINER_ID, mappings=mappings, published=dict)
    return [*bridge.network_steps(net, None, ctx.side, firewall), *attachment.plan_attach(att, ctx, opts)]


def cni_attach(driver_name: str) -> list[Step]:
    """As minirun-cni's ADD plans it (without its own intent and record steps)."""
    net, firewall = CNI_NETWORK, select_driver(driver_name)
    ctx = attachment.dry_run_context("/var/run/netns/pod1", AddressStore("/var/lib/cni/minirun/podnet/ipam"), firewall)
    att = Attachment(net, "vethcni0123456", 1400, "net1")
    routes = ((ipaddress.IPv4Network("10.96.0.0/12"), net.gateway), (attachment.DEFAULT_ROUTE, net.gateway))
    opts = AttachOptions(
        ipam_owner=CONTAINER_ID,
        port_owner=f"cni:{CONTAINER_ID}:net1",
        ifname="net1",
        route_step="routes",
        routes=routes,
        requested_ip=ipaddress.IPv4Address("10.244.0.9"),
        mac="02:42:0a:f4:00:09",
        hairpin=False,
        loopback_up=False,
        mappings=MAPPINGS[:1],
        where="/var/run/netns/pod1",
    )
    wanted = frozenset({"bridge", "nat"})  # isGateway false, ipMasq true
    return [
        *bridge.network_steps(net, None, ctx.side, firewall, gateway=False, wanted=wanted),
        *attachment.plan_attach(att, ctx, opts),
    ]


def detach(driver_name: str, order: tuple[str, ...], veth_gone=None, **fields) -> list[Step]:
    store = AddressStore("/run/minirun/ipam/minirun")
    detach = Detach(default_network(), CONTAINER_ID, **fields)
    steps = attachment.plan_detach(detach, store, select_driver(driver_name), _no_host, [], veth_gone=veth_gone)
    assert set(steps) <= set(order)
    return [steps[name] for name in order if name in steps]


def _lingers(ipr, name: str) -> bool:
    """Runtime's policy stands in here: the veth goes with its netns, deleted only if it lingers."""
    raise AssertionError("a plan that is only described removes nothing")


def _no_host():
    raise AssertionError("a plan that is only described opens no socket")


@pytest.mark.parametrize("driver", ["none", "nft"])
def test_runtime_attach_plan(driver):
    steps = runtime_attach(driver)
    names = "bridge ip-forward nat ipam veth veth-up eth0 default-route ports"  # the step k/N users see
    assert [s.name for s in steps] == names.split()
    check_golden(f"attach_runtime_{driver}", steps)


def test_runtime_attach_without_ports_has_no_ports_step():
    assert [s.name for s in runtime_attach("none", ())][-1] == "default-route"


@pytest.mark.parametrize("driver", ["none", "nft"])
def test_cni_attach_plan(driver):
    steps = cni_attach(driver)
    assert [s.name for s in steps] == ["bridge", "nat", "ipam", "veth", "veth-up", "net1", "routes", "ports"]
    check_golden(f"attach_cni_{driver}", steps)


def test_detach_plans_in_each_owners_order():
    """Each owner orders the same named steps (redesign plan §3b): container address, ports, veth; pod
    ports, veth, address; CNI address (every address of owner+ifname), ports, veth deleted now."""
    veth = "veth0123456789"
    container = detach(
        "nft", ("address", "ports", "veth"), _lingers, addresses=("10.77.0.2",), port_owner=CONTAINER_ID, host_veth=veth
    )
    pod = detach(
        "nft", ("ports", "veth", "address"), _lingers, addresses=("10.77.0.3",), port_owner=CONTAINER_ID, host_veth=veth
    )
    cni_owner = f"cni:{CONTAINER_ID}:net1"
    cni = detach("nft", attachment.DETACH_ORDER, ifname="net1", port_owner=cni_owner, host_veth="vethcni0123456")
    plain = detach("none", attachment.DETACH_ORDER, addresses=("10.77.0.5",))
    assert [s.name for s in plain] == ["address"]
    check_golden("detach_container_cni_pod", [*container, *cni, *pod, *plain])


def test_network_removal_plan_is_the_one_network_rm_runs(tmp_path, monkeypatch):
    """`network rm` runs bridge.plan_network_removal (issue 14 C17): the step names and, with the nft driver,
    the --explain text runtime/networks.removal_steps showed before (written out here, byte for byte)."""
    from minirun.runtime import network_admin

    monkeypatch.setenv("MINIRUN_STATE_DIR", str(tmp_path))
    network = CNI_NETWORK._replace(name="web", bridge="mr-web")
    ours = bridge.plan_network_removal(network, _no_host, select_driver("nft"))
    assert [s.name for s in ours] == ["rules", "bridge", "records"]
    expected = f"""step 1/3: rules
    nft delete chain inet minirun masq-web
    nft delete element inet minirun bridges {{ "mr-web" }}
    nft delete rule ... # every rule tagged "minirun network=web" or "minirun isolation network=web"
step 2/3: bridge
    ip link delete mr-web
step 3/3: records
    rm -r {tmp_path}/networks/web.json {tmp_path}/ipam/web
"""
    assert render(ours) == expected
    assert render(network_admin.removal_steps(network)) == expected
