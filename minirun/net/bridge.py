"""A network's host side: the bridge with its gateway address, IP forwarding and the firewall's rules for the
network (docker0's setup), shared by every attachment on it and never undone by one; its removal; and a
survey of what the host has (net/survey.py), for `doctor` and `topology`.

Attachments (one veth and address each) are net/attachment.py: the two have different lifetimes and users
(`network create/rm`, CNI GC, every attach).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from minirun import filelock, paths
from minirun.errors import ConfigError
from minirun.net import links, sysctl
from minirun.net.network import Network, record_path, remove_record
from minirun.net.rtnl import Rtnl
from minirun.plan import Step

if TYPE_CHECKING:
    from minirun.net.firewall import FirewallDriver

NETWORK_STEPS = frozenset({"bridge", "ip-forward", "nat"})


def check_subnet_free(host: Rtnl, network: Network) -> None:
    """Refuse a subnet that overlaps a route the host already has (other than our own bridge's)."""
    bridge = links.get_link(host, network.bridge)
    if bridge is not None and bridge.kind != "bridge":
        raise ConfigError(
            f"{network.bridge} exists but is a {bridge.kind or 'plain'} link, not a bridge",
            hint=f"delete it (ip link delete {network.bridge}) or use --network none|host",
        )
    own_index = bridge.index if bridge is not None else None
    if bridge is not None:
        foreign = [a for a in links.addresses(host, bridge.index) if a != network.gateway_interface]
        if foreign:
            raise ConfigError(
                f"{network.bridge} already has {foreign[0]}, not the gateway {network.gateway_interface} of "
                f"{network.subnet}",
                hint=f"stop its containers and delete it (ip link delete {network.bridge}) to change the subnet",
            )
    for route in links.routes(host):
        if route.dst.prefixlen == 0 or (own_index is not None and route.oif == own_index):
            continue
        if route.dst.overlaps(network.subnet):
            # Named after the dump, not before it: a concurrent first run may have just created our bridge
            # (and its route) after the lookup above. A device gone meanwhile took its route with it.
            dev = next((lk.name for lk in links.list_links(host) if lk.index == route.oif), None)
            if route.oif is not None and dev in (network.bridge, None):
                continue
            via = f" via {route.gateway}" if route.gateway else ""
            dev = dev or "(no device)"
            raise ConfigError(
                f"network {network.name} ({network.subnet}) overlaps the host route {route.dst}{via} dev {dev}",
                hint="remove that route or give minirun another subnet",
            )


class HostSide:
    """What the network steps found and did, so that --explain tells what happened, not only what could;
    the attachment's veth step reads `bridge_index`."""

    __slots__ = ("bridge_index", "bridge", "bridge_mac", "ip_forward", "nat")

    def __init__(self) -> None:
        self.bridge_index: int | None = None
        self.bridge: str | None = None  # "created" or "kept"
        self.bridge_mac: str | None = None
        self.ip_forward: bool | None = None  # False: it was already on
        self.nat: str | None = None  # the firewall script applied; "" when everything was in place


def network_steps(
    net: Network,
    host: Rtnl | None,
    side: HostSide,
    firewall: FirewallDriver,
    *,
    gateway: bool = True,
    wanted: frozenset[str] = NETWORK_STEPS,
) -> list[Step]:
    """The host side a network needs: the bridge with the gateway address, IP forwarding, the firewall's
    rules. Converging, and never undone. `gateway=False`: a bridge without an address (CNI's bridge plugin
    with isGateway false); `wanted`: the steps to include (CNI leaves out ip-forward and nat as configured)."""

    def ensure_bridge() -> None:
        bridge, created = links.ensure_bridge(host, net.bridge, net.mtu)
        side.bridge, side.bridge_mac = ("created" if created else "kept"), bridge.address
        if created:
            sysctl.disable_ipv6(net.bridge)
        if gateway:
            links.ensure_address(host, bridge.index, net.gateway_interface, net.bridge)
        if not bridge.up:
            links.set_up(host, bridge.index, net.bridge)
        side.bridge_index = bridge.index

    def enable_forwarding() -> None:
        # Host-wide and shared by every network (and by Docker): kept, like docker0, not undone.
        side.ip_forward = ensure_forwarding()

    def enable_nat() -> None:
        # Serialised so that concurrent first runs do not both insert the accepts into a foreign chain.
        with filelock.exclusive(paths.firewall_lock()):
            side.nat = firewall.ensure_network(net)

    def explain_bridge() -> list[str]:
        if side.bridge == "kept":
            return [f"# {net.bridge} is already there with {net.gateway_interface}: kept, as docker0 is"]
        address = [f"ip addr add {net.gateway_interface} dev {net.bridge}"] if gateway else []
        return [
            f"ip link add {net.bridge} address {side.bridge_mac or '<fixed 02:… MAC>'} type bridge"
            "   # a fixed MAC: the gateway's must not change as ports come and go",
            *address,
            f"ip link set {net.bridge} up",
        ]

    def explain_forwarding() -> list[str]:
        if side.ip_forward is False:
            return ["# net.ipv4.ip_forward is already 1 (sysctl net.ipv4.ip_forward)"]
        return ["sysctl -w net.ipv4.ip_forward=1"]

    steps = [
        Step("bridge", ensure_bridge, explain_bridge),
        Step("ip-forward", enable_forwarding, explain_forwarding),
        Step("nat", enable_nat, lambda: firewall.network_commands(net, side.nat)),
    ]
    return [step for step in steps if step.name in wanted]


def plan_network_removal(network: Network, host: Callable[[], Rtnl], firewall: FirewallDriver) -> list[Step]:
    """`network rm`: its rules, its bridge, its records (the network's JSON and its IPAM directory), each
    idempotent. The caller has checked that nothing uses the network and holds its lock."""
    from minirun.fs import tree

    def delete_bridge() -> None:
        with host() as ipr:
            links.delete_link(ipr, network.bridge)

    def forget() -> None:
        remove_record(network.name)
        tree.remove_tree(paths.ipam_dir(network.name)).check()

    return [
        Step("rules", lambda: firewall.remove_network(network), lambda: firewall.removal_commands(network)),
        Step("bridge", delete_bridge, lambda: [f"ip link delete {network.bridge}"]),
        Step("records", forget, lambda: [f"rm -r {record_path(network.name)} {paths.ipam_dir(network.name)}"]),
    ]


def remove_network_rules(network: Network, firewall: FirewallDriver) -> None:
    """The network's own rules go (the bridge stays, as with CNI's reference plugin), under the firewall lock
    so that a concurrent first attach does not interleave with it."""
    with filelock.exclusive(paths.firewall_lock()):
        firewall.remove_network(network)


def delete_unowned_veths(host: Rtnl, bridge: str, owner_ids: Callable[[], set[str]]) -> list[str]:
    """Delete the veths on `bridge` whose owner (links.host_veth_name of a container or pod id) is not among
    `owner_ids()`; what went, one line each. The owners are asked only after the ports are listed: a
    container writes its record before it makes its veth, so a veth listed here whose owner is in no record
    read afterwards really is an orphan (the other order cut the veth of a container created in between)."""
    master = links.get_link(host, bridge)
    if master is None:
        return []
    ports = [link for link in links.list_links(host) if link.master == master.index and link.kind == "veth"]
    owned = {links.host_veth_name(owner) for owner in owner_ids()}
    return [
        f"link {link.name} (on {bridge}, no container)"
        for link in ports
        if link.name not in owned and links.delete_link(host, link.name)
    ]


def ensure_forwarding() -> bool:
    """net.ipv4.ip_forward=1 (doctor's repair; network_steps does it on every attach). True if it was off."""
    return sysctl.ensure("net.ipv4.ip_forward", "1")
