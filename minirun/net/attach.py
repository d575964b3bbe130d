"""Attach a container's network namespace to a bridge network: the seed's "mini container network" as a plan.

The only module that combines links, IPAM, sysctl and the firewall. Runs in the host netns with two rtnetlink
sockets: one in the host, one inside the container's netns.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from minirun import filelock, paths
from minirun.errors import ConfigError
from minirun.net import firewall, links, sysctl
from minirun.net.firewall import nft as firewall_nft
from minirun.net.firewall import nft_ports
from minirun.net.ipam import AddressStore
from minirun.net.network import Network
from minirun.net.rtnl import Rtnl
from minirun.plan import Step

CONTAINER_IFNAME = "eth0"
LOOPBACK_INDEX = 1  # lo is always the first link of a fresh network namespace


class Attachment:
    """What attaching produced: the facts the state record and `inspect` show. Filled in as steps run."""

    __slots__ = ("network", "host_veth", "mtu", "address")

    def __init__(self, network: Network, host_veth: str, mtu: int) -> None:
        self.network = network
        self.host_veth = host_veth
        self.mtu = mtu
        self.address: ipaddress.IPv4Interface | None = None

    def as_record(self) -> dict[str, object]:
        """The part of a container's or pod's state record that teardown and `inspect` read."""
        return {
            "name": self.network.name,
            "bridge": self.network.bridge,
            "address": str(self.address),
            "gateway": str(self.network.gateway),
            "host_veth": self.host_veth,
            "mtu": self.mtu,
        }


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


def loopback_steps(container: Rtnl, ns_label: str) -> list[Step]:
    return [
        Step(
            "loopback",
            lambda: links.set_up(container, LOOPBACK_INDEX, "lo"),
            lambda: [f"nsenter --net={ns_label} ip link set lo up"],
        )
    ]


def network_steps(net: Network, host: Rtnl, state: dict, done: dict, *, gateway: bool = True) -> list[Step]:
    """The host side a network needs, shared by every container on it (docker0's setup): the bridge with
    the gateway address, IP forwarding, masquerade and isolation rules. Converging, and never undone.
    `gateway=False`: a bridge without an address (CNI's bridge plugin with isGateway false)."""

    def ensure_bridge() -> None:
        bridge, created = links.ensure_bridge(host, net.bridge, net.mtu)
        done["bridge"] = "created" if created else "kept"
        done["bridge-mac"] = bridge.address
        if created:
            sysctl.disable_ipv6(net.bridge)
        if gateway:
            links.ensure_address(host, bridge.index, net.gateway_interface, net.bridge)
        if not bridge.up:
            links.set_up(host, bridge.index, net.bridge)
        state["bridge_index"] = bridge.index

    def enable_forwarding() -> None:
        # Host-wide and shared by every network (and by Docker): kept, like docker0, not undone.
        done["ip-forward"] = sysctl.ensure("net.ipv4.ip_forward", "1")

    def enable_nat() -> None:
        # Serialised so that concurrent first runs do not both insert the accepts into a foreign chain.
        with filelock.exclusive(paths.firewall_lock()):
            state["foreign_drop"], done["nat"] = firewall.ensure_network(net)

    def explain_bridge() -> list[str]:
        commands = [
            f"ip link add {net.bridge} address {done.get('bridge-mac') or '<fixed 02:… MAC>'} type bridge"
            "   # a fixed MAC: the gateway's must not change as ports come and go",
            f"ip addr add {net.gateway_interface} dev {net.bridge}",
            f"ip link set {net.bridge} up",
        ]
        if done.get("bridge") == "kept":
            return [f"# {net.bridge} is already there with {net.gateway_interface}: kept, as docker0 is"]
        return commands

    def explain_forwarding() -> list[str]:
        if done.get("ip-forward") is False:
            return ["# net.ipv4.ip_forward is already 1 (sysctl net.ipv4.ip_forward)"]
        return ["sysctl -w net.ipv4.ip_forward=1"]

    def explain_nat() -> list[str]:
        return firewall_nft.network_commands(net, done.get("nat"))

    return [
        Step("bridge", ensure_bridge, explain_bridge),
        Step("ip-forward", enable_forwarding, explain_forwarding),
        Step("nat", enable_nat, explain_nat),
    ]


def bridge_steps(
    att: Attachment,
    host: Rtnl,
    container: Rtnl,
    netns_fd: int,
    ns_label: str,
    store: AddressStore,
    owner: str,
    mappings: tuple = (),
    published: Callable[[], dict] = dict,
) -> list[Step]:
    """The ordered steps that put `eth0` of the container on `att.network`'s bridge with an address."""
    net = att.network
    state: dict[str, object] = {"bridge_index": None, "attachment": att}
    # What each step found and did, so that --explain tells what happened, not only what could.
    done: dict[str, object] = {}
    in_ns = f"nsenter --net={ns_label}"

    def reserve() -> object:
        addr = store.reserve(owner, CONTAINER_IFNAME)
        att.address = ipaddress.IPv4Interface(f"{addr}/{net.subnet.prefixlen}")
        return lambda: store.release(addr, owner)

    def create_veth() -> object:
        links.add_veth_pair(host, att.host_veth, CONTAINER_IFNAME, netns_fd, mtu=att.mtu, master=state["bridge_index"])
        return lambda: links.delete_link(host, att.host_veth)

    def host_end_up() -> None:
        sysctl.disable_ipv6(att.host_veth)
        veth = links.get_link(host, att.host_veth)
        if veth is None:
            raise ConfigError(f"{att.host_veth} vanished right after it was created")
        links.set_up(host, veth.index, att.host_veth)
        links.set_hairpin(host, veth.index, att.host_veth)

    def configure_eth0() -> None:
        eth0 = links.get_link(container, CONTAINER_IFNAME)
        if eth0 is None:
            raise ConfigError(f"{CONTAINER_IFNAME} is missing inside the container")
        links.ensure_address(container, eth0.index, att.address, CONTAINER_IFNAME)
        links.set_up(container, eth0.index, CONTAINER_IFNAME)
        links.set_up(container, LOOPBACK_INDEX, "lo")
        state["eth0_index"] = eth0.index

    def default_route() -> None:
        links.add_default_route(container, net.gateway, state["eth0_index"], CONTAINER_IFNAME)

    def publish() -> object:
        from minirun.net import ports

        # Checked again under the lock: validation ran before, but a concurrent run may have won the port.
        with filelock.exclusive(paths.ports_lock()):
            ports.check_free(mappings, published())
            firewall.ensure_ports(net, owner, str(att.address.ip), mappings)
        return lambda: firewall.remove_ports(owner, net)

    def explain_ports() -> list[str]:
        address = str(att.address.ip) if att.address else "<its address>"
        return nft_ports.ports_commands(net, owner, address, mappings)

    address_text = lambda: str(att.address) if att.address else f"<next free address in {net.subnet}>"  # noqa: E731
    port_steps = [Step("ports", publish, explain_ports)] if mappings else []
    return [
        *network_steps(net, host, state, done),
        Step("ipam", reserve, lambda: [f"# reserve {address_text()} for {owner} ({store.directory})"]),
        Step(
            "veth",
            create_veth,
            lambda: [
                f"ip link add {att.host_veth} mtu {att.mtu} master {net.bridge} type veth "
                f"peer name {CONTAINER_IFNAME} mtu {att.mtu} netns {ns_label}",
            ],
        ),
        Step(
            "veth-up",
            host_end_up,
            lambda: [
                f"sysctl -w net.ipv6.conf.{att.host_veth}.disable_ipv6=1",
                f"ip link set {att.host_veth} up",
                f"bridge link set dev {att.host_veth} hairpin on",
            ],
        ),
        Step(
            "eth0",
            configure_eth0,
            lambda: [
                f"{in_ns} ip addr add {address_text()} dev {CONTAINER_IFNAME}",
                f"{in_ns} ip link set {CONTAINER_IFNAME} up",
                f"{in_ns} ip link set lo up",
            ],
        ),
        Step("default-route", default_route, lambda: [f"{in_ns} ip route add default via {net.gateway}"]),
        *port_steps,
    ]
