"""One attachment: a network namespace's interface on a bridge network, with an address, routes and published
ports (the seed's "mini container network"), as a plan of Steps; its teardown as named Steps; and a check
that it is still what was made. Used by runtime (containers, pods) and by minirun-cni alike: the only place
that combines links, IPAM, sysctl and the firewall for one attachment. The network's shared host side
(bridge, forwarding, the network's rules) is net/bridge.py.

Runs in the host netns with two rtnetlink sockets: one in the host, one inside the target netns. A dry run
(--dry-run) uses the same steps with no sockets: they are only described.

The CNI bridge plugin takes the same steps: https://www.cni.dev/plugins/current/main/bridge/; the CNI spec:
https://github.com/containernetworking/cni/blob/main/SPEC.md
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable
from typing import Any, NamedTuple

from minirun import filelock, paths
from minirun.errors import ConfigError, KernelError
from minirun.net import links, sysctl
from minirun.net.bridge import HostSide
from minirun.net.firewall import FirewallDriver, select_driver
from minirun.net.firewall.tags import port_owner_tag
from minirun.net.ipam import (
    AddressStore,
    AddressTaken,
    Allocator,
    RangeAllocator,
    Reservation,
    SubnetExhausted,
    all_reservations,
)
from minirun.net.links import (
    DEFAULT_ROUTE,
    add_default_route,
    delete_link,
    ensure_address,
    get_link,
    host_veth_name,
    list_links,
    routes,
    set_up,
)
from minirun.net.network import Network
from minirun.net.ports import PortMapping, check_free
from minirun.net.rtnl import Rtnl, codecs
from minirun.plan import Step

# Names an owner (runtime, minirun-cni, doctor's repairs) uses with an attachment, so that it reaches net/ only
# through here (runtime's reconcile and `gc --damaged` also list every reservation and the host's links, to
# find what no owner holds any more);
# and, loaded on first use, AttachmentState, Expected, PortRules, inspect, problems and verify
# (net/attachment_check.py).
__all__ = [
    "CONTAINER_IFNAME",
    "DEFAULT_ROUTE",
    "DETACH_ORDER",
    "AddressStore",
    "AddressTaken",
    "AttachContext",
    "AttachOptions",
    "Attachment",
    "Detach",
    "FirewallDriver",
    "Reservation",
    "Rtnl",
    "SubnetExhausted",
    "add_default_route",
    "address_store",
    "all_reservations",
    "delete_link",
    "dry_run_context",
    "ensure_address",
    "get_link",
    "has_interface",
    "host_veth_name",
    "list_links",
    "loopback_steps",
    "open_host",
    "open_netns",
    "preload",
    "plan_attach",
    "plan_detach",
    "port_owner_tag",
    "routes",
    "select_driver",
    "set_up",
]

CONTAINER_IFNAME = "eth0"
LOOPBACK_INDEX = 1  # lo is always the first link of a fresh network namespace
DETACH_ORDER = ("address", "ports", "veth")  # plan_detach's step names; each owner orders them itself


class Attachment:
    """What attaching produced: the facts the state record and `inspect` show. Filled in as steps run."""

    __slots__ = ("network", "host_veth", "mtu", "address", "ifname", "index", "mac", "veth_mac")

    def __init__(self, network: Network, host_veth: str, mtu: int, ifname: str = CONTAINER_IFNAME) -> None:
        self.network = network
        self.host_veth = host_veth
        self.mtu = mtu
        self.ifname = ifname
        self.address: ipaddress.IPv4Interface | None = None
        self.index: int | None = None  # of ifname inside the netns
        self.mac: str | None = None  # of ifname
        self.veth_mac: str | None = None  # of the host end

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


class AttachOptions(NamedTuple):
    """Where runtime's and CNI's attachments differ. Runtime: the defaults (eth0, a default route, hairpin,
    lo up, published ports checked against every other owner's). CNI: CNI_IFNAME, a "routes" step with the
    configured routes, hairpin and MAC as configured, a requested IP, no lo, a veth name it may take over."""

    ipam_owner: str  # who holds the address (first line of the IPAM file)
    port_owner: str  # the tag of its DNAT rules
    ifname: str = CONTAINER_IFNAME
    route_step: str = "default-route"
    routes: tuple[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address], ...] | None = None  # None: default via gw
    requested_ip: ipaddress.IPv4Address | None = None  # claimed instead of the next free one
    mac: str | None = None
    hairpin: bool = True
    loopback_up: bool = True
    mappings: tuple[PortMapping, ...] = ()
    # Every other owner's published ports, checked again under the ports lock; None: no check
    published: Callable[[], dict] | None = None
    # The host veth name exists: raise if it is someone else's; return to have it deleted and made again
    claim_stale_veth: Callable[[str], None] | None = None
    where: str = "the container"  # how messages name the netns


class AttachContext(NamedTuple):
    """The sockets and stores a plan works with. Dry run: no sockets, netns_fd -1 (dry_run_context)."""

    host: Rtnl | None
    container: Rtnl | None
    netns_fd: int
    ns_label: str  # how commands name the netns: nsenter --net=LABEL
    store: AddressStore
    firewall: FirewallDriver
    side: HostSide  # filled by bridge.network_steps: the bridge's index


def __getattr__(name: str) -> Any:
    """attachment_check's names, loaded on first use (PEP 562): an attach does not pay for CHECK."""
    if name not in ("AttachmentState", "Expected", "PortRules", "inspect", "problems", "verify"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from minirun.net import attachment_check

    return getattr(attachment_check, name)


def preload() -> None:
    """Load now what the first attach would load: the netlink codecs and the firewall driver (a spare worker
    of the supervisor does this before its request comes)."""
    codecs()
    select_driver()


def open_host() -> Rtnl:
    """An rtnetlink socket in the current (host) network namespace."""
    return Rtnl()


def open_netns(path: str) -> Rtnl:
    """An rtnetlink socket inside the network namespace at `path` (a bind mount or /proc/PID/ns/net)."""
    from minirun.net.netns import rtnl_in

    return rtnl_in(path)


def has_interface(ipr: Rtnl, ifname: str) -> bool:
    return links.get_link(ipr, ifname) is not None


def address_store(
    directory: str,
    network: Network,
    start: ipaddress.IPv4Address | None = None,
    end: ipaddress.IPv4Address | None = None,
) -> AddressStore:
    """The IPAM store of `network` in `directory`, handing out addresses in start-end (default: all)."""
    base = Allocator(network.subnet, network.gateway)
    return AddressStore(directory, base if start is None and end is None else RangeAllocator(base, start, end))


def dry_run_context(ns_label: str, store: AddressStore, firewall: FirewallDriver) -> AttachContext:
    return AttachContext(None, None, -1, ns_label, store, firewall, HostSide())


class _Attach:
    """The actions and explanations of plan_attach's steps (one method each)."""

    def __init__(self, att: Attachment, ctx: AttachContext, opts: AttachOptions) -> None:
        self.att, self.ctx, self.opts, self.net = att, ctx, opts, att.network
        self.in_ns = f"nsenter --net={ctx.ns_label}"

    def address_text(self) -> str:
        return str(self.att.address) if self.att.address else f"<next free address in {self.net.subnet}>"

    def reserve(self) -> object:
        store, owner, wanted = self.ctx.store, self.opts.ipam_owner, self.opts.requested_ip
        if wanted is not None:
            if not store.claim(wanted, owner, self.opts.ifname):
                raise AddressTaken(f"the requested address {wanted} is already in use by {store.owner_of(wanted)}")
            addr = wanted
        else:
            addr = store.reserve(owner, self.opts.ifname)
        self.att.address = ipaddress.IPv4Interface(f"{addr}/{self.net.subnet.prefixlen}")
        return lambda: store.release(addr, owner)

    def create_veth(self) -> object:
        host, att = self.ctx.host, self.att

        def add() -> None:
            master = self.ctx.side.bridge_index
            links.add_veth_pair(host, att.host_veth, att.ifname, self.ctx.netns_fd, mtu=att.mtu, master=master)

        try:
            add()
        except KernelError as exc:
            # The derived name is taken on the host while the interface is absent from the netns: the leftover
            # of an attachment of the same id whose netns died without a teardown, if the owner says so.
            if exc.errno != errno.EEXIST or self.opts.claim_stale_veth is None:
                raise
            self.opts.claim_stale_veth(att.host_veth)
            if not links.delete_link(host, att.host_veth):
                raise
            add()
        return lambda: links.delete_link(host, att.host_veth)

    def host_end_up(self) -> None:
        host, name = self.ctx.host, self.att.host_veth
        sysctl.disable_ipv6(name)
        veth = links.get_link(host, name)
        if veth is None:
            raise ConfigError(f"{name} vanished right after it was created")
        links.set_up(host, veth.index, name)
        if self.opts.hairpin:
            links.set_hairpin(host, veth.index, name)
        self.att.veth_mac = veth.address

    def configure_iface(self) -> None:
        container, ifname, opts = self.ctx.container, self.att.ifname, self.opts
        link = links.get_link(container, ifname)
        if link is None:
            raise ConfigError(f"{ifname} is missing inside {opts.where}")
        if opts.mac:
            links.set_mac(container, link.index, opts.mac, ifname)
        links.ensure_address(container, link.index, self.att.address, ifname)
        links.set_up(container, link.index, ifname)
        if opts.loopback_up:
            links.set_up(container, LOOPBACK_INDEX, "lo")
        self.att.index, self.att.mac = link.index, opts.mac or link.address

    def add_routes(self) -> None:
        container, att = self.ctx.container, self.att
        if self.opts.routes is None:
            links.add_default_route(container, self.net.gateway, att.index, att.ifname)
        for dst, gateway in self.opts.routes or ():
            links.add_route(container, dst, gateway, att.index, att.ifname)

    def publish(self) -> object:
        opts, firewall = self.opts, self.ctx.firewall
        # Checked again under the lock: validation ran before, but a concurrent run may have won the port.
        with filelock.exclusive(paths.ports_lock()):
            if opts.published is not None:
                check_free(opts.mappings, opts.published())
            firewall.ensure_ports(self.net, opts.port_owner, str(self.att.address.ip), opts.mappings)
        return lambda: firewall.remove_ports(opts.port_owner, self.net)

    def explain_ports(self) -> list[str]:
        address = str(self.att.address.ip) if self.att.address else "<its address>"
        return self.ctx.firewall.ports_commands(self.net, self.opts.port_owner, address, self.opts.mappings)

    def explain_veth(self) -> list[str]:
        att = self.att
        return [
            f"ip link add {att.host_veth} mtu {att.mtu} master {self.net.bridge} type veth "
            f"peer name {att.ifname} mtu {att.mtu} netns {self.ctx.ns_label}",
        ]

    def explain_host_end(self) -> list[str]:
        name = self.att.host_veth
        hairpin = [f"bridge link set dev {name} hairpin on"] if self.opts.hairpin else []
        return [f"sysctl -w net.ipv6.conf.{name}.disable_ipv6=1", f"ip link set {name} up", *hairpin]

    def explain_iface(self) -> list[str]:
        ifname, in_ns = self.att.ifname, self.in_ns
        mac = [f"{in_ns} ip link set {ifname} address {self.opts.mac}"] if self.opts.mac else []
        lo = [f"{in_ns} ip link set lo up"] if self.opts.loopback_up else []
        address = [f"{in_ns} ip addr add {self.address_text()} dev {ifname}", f"{in_ns} ip link set {ifname} up"]
        return [*mac, *address, *lo]

    def explain_routes(self) -> list[str]:
        if self.opts.routes is None:
            return [f"{self.in_ns} ip route add default via {self.net.gateway}"]
        return [f"{self.in_ns} ip route add {dst} via {gw} dev {self.att.ifname}" for dst, gw in self.opts.routes]


def plan_attach(att: Attachment, ctx: AttachContext, opts: AttachOptions) -> list[Step]:
    """The ordered steps that put `opts.ifname` of the netns on `att.network`'s bridge with an address
    (ipam, veth, veth-up, IFNAME, routes, ports), each pushing its undo. The network's own steps come first
    (bridge.network_steps, which fills ctx.side); an owner splices its record steps around these."""
    steps = _Attach(att, ctx, opts)
    store = ctx.store
    plan = [
        Step(
            "ipam",
            steps.reserve,
            lambda: [f"# reserve {steps.address_text()} for {opts.ipam_owner} ({store.directory})"],
        ),
        Step("veth", steps.create_veth, steps.explain_veth),
        Step("veth-up", steps.host_end_up, steps.explain_host_end),
        Step(opts.ifname, steps.configure_iface, steps.explain_iface),
        Step(opts.route_step, steps.add_routes, steps.explain_routes),
    ]
    return [*plan, Step("ports", steps.publish, steps.explain_ports)] if opts.mappings else plan


def loopback_steps(container: Rtnl | None, ns_label: str) -> list[Step]:
    """--network none: only lo comes up."""
    return [
        Step(
            "loopback",
            lambda: links.set_up(container, LOOPBACK_INDEX, "lo"),
            lambda: [f"nsenter --net={ns_label} ip link set lo up"],
        )
    ]


# ---------------------------------------------------------------------------------------------------- detach


class Detach(NamedTuple):
    """What one attachment holds, as its owner's record tells it."""

    network: Network | None  # None: the record names no network (ports go without releasing 127/8 routing)
    ipam_owner: str
    addresses: tuple[str, ...] = ()
    ifname: str | None = None  # also release every address IPAM holds for (ipam_owner, ifname or "")
    port_owner: str | None = None  # None: no port rules to remove
    host_veth: str | None = None  # None: no veth (--network none|host)


def plan_detach(
    detach: Detach,
    store: AddressStore,
    firewall: FirewallDriver,
    host: Callable[[], Rtnl],
    removed: list[str],
    veth_gone: Callable[[Rtnl, str], bool] | None = None,
) -> dict[str, Step]:
    """The steps that release an attachment, by name ("address", "ports", "veth"; only those it holds):
    each owner puts them in its own order among its own steps. Every step is idempotent (what is gone is
    done) and notes in `removed` what it really removed. `veth_gone`: how the host veth goes (it dies with
    its netns: runtime waits for that and deletes it only if it lingers); None deletes it now (CNI)."""
    steps: dict[str, Step] = {}
    if detach.addresses or detach.ifname is not None:
        steps["address"] = _release_address_step(detach, store, removed)
    owner = detach.port_owner
    if owner is not None:

        def unpublish() -> None:
            if firewall.remove_ports(owner, detach.network):
                removed.append("published ports")

        steps["ports"] = Step("ports", unpublish, lambda: firewall.ports_removal_commands(owner))
    veth = detach.host_veth
    if veth is not None:

        def remove_veth() -> None:
            ipr = host()
            if (veth_gone or links.delete_link)(ipr, veth):
                removed.append(f"link {veth}")

        explain = (
            f"# {veth} goes with the container's netns; if it lingers: ip link delete {veth}"
            if veth_gone is not None
            else f"ip link delete {veth}"
        )
        steps["veth"] = Step("veth", remove_veth, lambda: [explain])
    return steps


def _release_address_step(detach: Detach, store: AddressStore, removed: list[str]) -> Step:
    def held() -> list[str]:
        # An attachment killed before its record was complete reserved an address that no record names.
        wanted = dict.fromkeys(a for a in detach.addresses if a)
        if detach.ifname is not None:
            for addr, reservation in store.reservations().items():
                if reservation.owner == detach.ipam_owner and reservation.ifname in (detach.ifname, ""):
                    wanted[addr] = None
        return list(wanted)

    def release() -> None:
        for addr in held():
            if store.release(addr, detach.ipam_owner):
                removed.append(f"address {addr}")

    def explain() -> list[str]:
        if not detach.addresses:
            return [f"rm {store.directory}/<each address of {detach.ipam_owner}>   # back in the pool"]
        return [f"rm {store.directory}/{addr}   # back in the pool" for addr in detach.addresses]

    return Step("address", release, explain)
