"""User networks (`minirun network create/ls/inspect/rm`): each its own bridge, subnet, masquerade rule
and isolation from the other networks, as Docker's user-defined bridge networks and netavark's are."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from typing import Any

from minirun import filelock, paths
from minirun.errors import ConfigError, MinirunError, NotFound
from minirun.net import network as netdefs
from minirun.plan import Narrator, Step, describe, run_best_effort, run_plan
from minirun.runtime import model, store

# Where automatic subnets come from: /16s after the default network's 10.77/16, clear of Podman's 10.88/16
# and Kubernetes' 10.244/16 (skipped below only if something on the host already uses them).
AUTO_POOL = [ipaddress.IPv4Network(f"10.{second}.0.0/16") for second in range(78, 128) if second != 88]


def _lock() -> contextlib.AbstractContextManager[None]:
    return filelock.exclusive(os.path.join(paths.state_root(), "networks.lock"))


def _taken_subnets(host) -> list[ipaddress.IPv4Network]:
    from minirun.net import attachment

    taken = [n.subnet for n in netdefs.all_networks()]
    taken += [r.dst for r in attachment.routes(host) if r.dst.prefixlen > 0]
    return taken


def choose_subnet(host) -> ipaddress.IPv4Network:
    taken = _taken_subnets(host)
    for candidate in AUTO_POOL:
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise ConfigError("no free subnet left in minirun's pool (10.78-127.0.0/16)", hint="give --subnet CIDR")


def create(
    name: str,
    subnet: str | None = None,
    gateway: str | None = None,
    internal: bool = False,
    mtu: int | None = None,
    narrator: Narrator | None = None,
    dry_run: bool = False,
) -> dict[str, Any] | None:
    """Validate everything, then make the bridge, forwarding and rules (the same steps a run would)."""
    from minirun.net import attachment, bridge

    netdefs.validate_name(name)
    firewall = attachment.select_driver()
    firewall.validate()
    host = attachment.open_host()
    with _lock() if not dry_run else contextlib.nullcontext():
        if netdefs.load(name) is not None:
            raise MinirunError(f'network "{name}" already exists', hint=f"see minirun network inspect {name}", code=1)
        chosen = netdefs.parse_subnet(subnet, "--subnet") if subnet else choose_subnet(host)
        clash = next((n for n in netdefs.all_networks() if n.subnet.overlaps(chosen)), None)
        if clash is not None:
            raise ConfigError(f"subnet {chosen} overlaps network {clash.name} ({clash.subnet})", hint="pick another")
        gw = _gateway(chosen, gateway)
        network = netdefs.Network(name, netdefs.bridge_name(name), chosen, gw, internal, mtu)
        bridge.check_subnet_free(host, network)
        steps = bridge.network_steps(network, host, bridge.HostSide(), firewall)
        if dry_run:
            describe(steps, narrator)
            return None
        record = {**netdefs.to_record(network), "id": os.urandom(6).hex(), "created": store.now_iso()}
        with contextlib.ExitStack() as undo:
            netdefs.save_record(record)
            undo.callback(netdefs.remove_record, name)
            # The bridge and rules are shared, so their steps leave no undo of their own; roll them back here.
            undo.callback(_remove_kernel_objects, network, firewall)
            run_plan(steps, undo, narrator=narrator)
            undo.pop_all()
        return record


def _gateway(subnet: ipaddress.IPv4Network, text: str | None) -> ipaddress.IPv4Address:
    if text is None:
        return subnet.network_address + 1
    try:
        gateway = ipaddress.IPv4Address(text)
    except ValueError:
        raise ConfigError(f'invalid gateway "{text}"', hint="give an IPv4 address inside the subnet") from None
    if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
        raise ConfigError(f"gateway {gateway} is not a usable address of {subnet}", hint="pick one inside it")
    return gateway


def _remove_kernel_objects(network: netdefs.Network, firewall) -> None:
    """The rules and the bridge: the first two steps of `network rm`."""
    from minirun.net import attachment, bridge

    for step in bridge.plan_network_removal(network, attachment.open_host, firewall)[:2]:
        step.apply()


def users(network: netdefs.Network) -> list[str]:

    names = [
        f"container {r.get('name')}"
        for r in store.all_records()
        if model.is_live(r) and (r.get("network") or {}).get("name") == network.name
    ]
    names += [f"pod {p['name']}" for p in store.all_pods() if (p.get("network") or {}).get("name") == network.name]
    return names


def remove(name: str, narrator: Narrator | None = None) -> None:
    network = netdefs.load(name)
    if network is None:
        if name in netdefs.RESERVED:
            raise MinirunError(f"the default network {name} cannot be removed", code=1)
        raise NotFound(f"no such network: {name}", hint="see 'minirun network ls'")
    with _lock():
        in_use = users(network)
        if in_use:
            raise MinirunError(f"network {name} is in use by {', '.join(in_use)}", hint="remove those first", code=1)
        run_best_effort(removal_steps(network), f"removal of network {name} was incomplete", narrator)


def removal_steps(network: netdefs.Network) -> list[Step]:
    """rules, bridge, records (net/bridge.py plan_network_removal) with the host's firewall driver."""
    from minirun.net import attachment, bridge

    return bridge.plan_network_removal(network, attachment.open_host, attachment.select_driver())


def inspect(name: str) -> dict[str, Any]:
    network = netdefs.resolve(name) if name in netdefs.RESERVED or netdefs.load(name) else None
    if network is None:
        raise NotFound(f"no such network: {name}", hint="see 'minirun network ls'")
    return {
        "Name": network.name,
        "Driver": "bridge",
        "Bridge": network.bridge,
        "Subnet": str(network.subnet),
        "Gateway": str(network.gateway),
        "Internal": network.internal,
        "MTU": network.mtu or netdefs.DEFAULT_MTU,
        "Containers": users(network),
        "NameResolution": False,
    }


def rows() -> list[dict[str, Any]]:
    return [inspect(n.name) for n in netdefs.all_networks()]
