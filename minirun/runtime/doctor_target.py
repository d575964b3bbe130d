"""`minirun doctor CONTAINER|POD`: inside one container or pod, loopback, eth0, its address and the default
route; on the host, its veth and the bridge port. The facts are net.attachment_check.inspect()'s, the same
that CNI CHECK compares (what the record says was made, against what the kernel shows)."""

from __future__ import annotations

import ipaddress
import os
from typing import Any, NamedTuple

from minirun import paths
from minirun.net.attachment import (
    FirewallDriver,
    Rtnl,
    add_default_route,
    address_store,
    ensure_address,
    open_netns,
    set_up,
)
from minirun.net.attachment_check import AttachmentState, Expected, inspect
from minirun.net.network import Network
from minirun.net.survey import link_named
from minirun.runtime import model, query, store
from minirun.runtime.doctor_finding import Finding, ok

LOOPBACK_INDEX = 1  # lo is always the first link of a network namespace


class Target(NamedTuple):
    ref: str  # as the user named it
    owner: str  # the id of the container or pod that holds the address
    label: str  # "pod NAME" or "container NAME"
    netns: str
    enter: str  # the command prefix that runs a command in the netns
    net: dict[str, Any]  # the "network" part of its record


def check_target(ref: str, host: Rtnl, firewall: FirewallDriver, network: Network) -> list[Finding]:
    target = _locate(ref)
    if not isinstance(target, Target):
        return target
    inside = open_netns(target.netns)  # stays open: the repairs use it
    if not target.net:
        lo = link_named(inside, "lo")
        return [_loopback(target, inside, lo is not None and lo.up)]
    expected = Expected.of_runtime(target.net, network, target.owner, target.netns)
    pool = address_store(paths.ipam_dir(network.name), network)
    state = inspect(expected, host, inside, pool, firewall)
    findings = [_loopback(target, inside, state.lo is not None and state.lo.up)]
    if state.iface is None:
        return [
            *findings,
            Finding(
                False,
                f"{target.label}: eth0 is missing",
                "there is no way out of the namespace",
                f"minirun rm -f {ref}  # and run it again",
            ),
        ]
    return findings + _eth0_findings(target, inside, expected, state) + _veth_findings(target, host, network, state)


def _locate(ref: str) -> Target | list[Finding]:
    """The pod `ref`, the pod of a member `ref`, or the running container `ref`."""
    pod = store.load_pod(ref)
    if pod is not None:
        netns = pod["pins"]["net"]
        enter = f"ip netns exec {os.path.basename(netns)}"
        return Target(ref, pod["id"], f"pod {ref}", netns, enter, pod.get("network") or {})
    record = query.find(ref)
    if record.get("pod"):
        return _locate(record["pod"])
    if not model.is_running(record):
        return [Finding(False, f"container {record['name']} is not running", "there is nothing to check inside")]
    netns = f"/proc/{record['pid']}/ns/net"
    return Target(
        ref, record["id"], f"container {record['name']}", netns, f"nsenter --net={netns}", record.get("network") or {}
    )


def _loopback(target: Target, inside: Rtnl, up: bool) -> Finding:
    return (
        ok(f"{target.label}: loopback is up")
        if up
        else Finding(
            False,
            f"{target.label}: loopback is down",
            "127.0.0.1 and localhost do not work: members of a pod cannot talk to each other",
            f"{target.enter} ip link set lo up",
            lambda: set_up(inside, LOOPBACK_INDEX, "lo"),
        )
    )


def _eth0_findings(target: Target, inside: Rtnl, expected: Expected, state: AttachmentState) -> list[Finding]:
    label, enter, eth0, address = target.label, target.enter, state.iface, expected.address
    assert eth0 is not None
    ((_, gateway),) = expected.routes
    return [
        ok(f"{label}: eth0 is up")
        if eth0.up
        else Finding(
            False,
            f"{label}: eth0 is down",
            "a link that is down carries nothing",
            f"{enter} ip link set eth0 up",
            lambda: set_up(inside, eth0.index, "eth0"),
        ),
        ok(f"{label}: eth0 has {address}")
        if address in state.addresses
        else Finding(
            False,
            f"{label}: eth0 lacks its address {address}",
            "without an address the container can neither send from nor be reached at it",
            f"{enter} ip addr add {address} dev eth0",
            lambda: ensure_address(inside, eth0.index, address, "eth0"),
        ),
        ok(f"{label}: default route via {gateway}")
        if not state.missing_routes
        else Finding(
            False,
            f"{label}: no default route via {gateway}",
            "only its own subnet is reachable: everything else gets 'Network is unreachable'",
            f"{enter} ip route add default via {gateway}",
            lambda: add_default_route(inside, ipaddress.IPv4Address(gateway), eth0.index, "eth0"),
        ),
    ]


def _veth_findings(target: Target, host: Rtnl, network: Network, state: AttachmentState) -> list[Finding]:
    label, veth = target.label, state.veth
    if veth is None:
        return [
            Finding(
                False,
                f"{label}: host veth {target.net.get('host_veth')} is missing",
                "eth0's other end is gone: the namespace is cut off",
                f"minirun rm -f {target.ref}",
            )
        ]
    return [
        ok(f"{label}: host veth {veth.name} is up")
        if veth.up
        else Finding(
            False,
            f"{label}: host veth {veth.name} is down",
            "the cable is unplugged on the host side",
            f"ip link set {veth.name} up",
            lambda: set_up(host, veth.index, veth.name),
        ),
        ok(f"{label}: {veth.name} is a port of {network.bridge}")
        if state.veth_on_bridge
        else Finding(
            False,
            f"{label}: {veth.name} is not attached to {network.bridge}",
            "its frames never reach the bridge, the gateway or other containers",
            f"ip link set {veth.name} master {network.bridge}",
        ),
    ]
