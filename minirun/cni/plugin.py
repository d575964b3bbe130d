"""ADD, DEL, CHECK, GC and STATUS over minirun's own network code.

ADD is a plan (`minirun.plan.run_plan`): the network's shared host side from `attach.network_steps` (the
bridge, with the gateway address when isGateway; ip_forward when isGateway; the masquerade rule in `inet
minirun` when ipMasq), then this attachment's steps (address, veth pair created with its peer directly in
CNI_NETNS as CNI_IFNAME, routes, published ports, the record), each pushing its undo: a failed ADD leaves
nothing behind. DEL and GC are best-effort and find everything from the attachment record (or, without one,
from prevResult, the IPAM files and the names minirun derives from the container id), so they work with an
empty CNI_NETNS and no prevResult, any number of times. Every command holds the network's lock.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import sys
import time
from typing import Any, NamedTuple

from minirun import filelock, paths
from minirun.cni.config import Conf, Route
from minirun.cni.protocol import (
    ERR_ADDRESS,
    ERR_CHECK,
    ERR_IFACE_EXISTS,
    ERR_INVALID_CONFIG,
    ERR_NOT_AVAILABLE,
    ERR_PLUGIN,
    ERR_TRY_AGAIN,
    ERR_UNKNOWN_CONTAINER,
    CniError,
    Params,
    lock_timeout,
    prev_addresses,
)
from minirun.cni.store import LockTimeout, Store
from minirun.errors import KernelError, MinirunError, StepError
from minirun.net import attach, firewall, links, rtnl, sysctl
from minirun.net.ipam import AddressStore, Allocator, SubnetExhausted
from minirun.net.netns import rtnl_in
from minirun.net.ports import PortMapping, PortRules
from minirun.net.rtnl import NetlinkError, Rtnl
from minirun.plan import Step, run_plan

TIMINGS_ENV = "MINIRUN_CNI_TIMINGS"  # set: ADD logs how long each step took, on stderr
DEFAULT_ROUTE = ipaddress.IPv4Network("0.0.0.0/0")


@contextlib.contextmanager
def network_lock(store: Store):
    try:
        with store.locked(lock_timeout()):
            yield
    except LockTimeout as exc:
        raise CniError(ERR_TRY_AGAIN, f"timed out waiting for the network lock {exc}", "try again later") from None


class RangeAllocator(NamedTuple):
    """minirun's Allocator (round-robin, never network/gateway/broadcast) limited to rangeStart-rangeEnd."""

    base: Allocator
    start: ipaddress.IPv4Address | None
    end: ipaddress.IPv4Address | None

    def next_free(self, last: ipaddress.IPv4Address | None, taken: set[str]) -> ipaddress.IPv4Address:
        for addr in self.base.candidates(last):
            if (self.start and addr < self.start) or (self.end and addr > self.end):
                continue
            if str(addr) not in taken:
                return addr
        raise SubnetExhausted(f"no free address left in {self.base.subnet} ({len(taken)} in use)")


def address_store(conf: Conf, store: Store) -> AddressStore:
    base = Allocator(conf.network.subnet, conf.network.gateway)
    return AddressStore(store.ipam_dir, RangeAllocator(base, conf.range_start, conf.range_end))


def port_owner(container_id: str, ifname: str) -> str:
    """The tag of one attachment's DNAT rules (`minirun port owner=cni:ID:IFNAME`), < nft's 128-byte comment."""
    owner = f"cni:{container_id}:{ifname}"
    if len(owner) > 100:
        import zlib

        owner = f"cni:{container_id[:80]}~{zlib.crc32(container_id.encode()):08x}:{ifname}"
    return owner


def expected_routes(conf: Conf) -> list[Route]:
    """ipam.routes (a missing gw means the network's gateway), plus the default route for isDefaultGateway."""
    routes = list(conf.routes)
    if conf.is_default_gateway and not any(r.dst == DEFAULT_ROUTE for r in routes):
        routes.append(Route(DEFAULT_ROUTE, conf.network.gateway))
    return routes


def _route_msg(dst: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address, oif: int):
    msg = rtnl.codecs().rtmsg()
    msg["family"] = socket.AF_INET
    msg["table"] = links.RT_TABLE_MAIN
    msg["proto"] = links.RTPROT_BOOT
    msg["scope"] = links.RT_SCOPE_UNIVERSE
    msg["type"] = links.RTN_UNICAST
    msg["dst_len"] = dst.prefixlen
    attrs = [["RTA_GATEWAY", str(gateway)], ["RTA_OIF", oif]]
    if dst.prefixlen:
        attrs.insert(0, ["RTA_DST", str(dst.network_address)])
    msg["attrs"] = attrs
    return msg


def add_route(ipr: Rtnl, dst: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address, oif: int, ifname: str) -> None:
    """`ip route add DST via GW dev IFNAME`; the same route already there is fine."""
    try:
        ipr.request(_route_msg(dst, gateway, oif), rtnl.RTM_NEWROUTE, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL)
    except NetlinkError as exc:
        if exc.errno != errno.EEXIST:
            raise KernelError(f"ip route add {dst} via {gateway} dev {ifname}", exc.errno) from exc


def set_mac(ipr: Rtnl, index: int, mac: str, ifname: str) -> None:
    msg = rtnl.codecs().ifinfmsg()
    msg["index"] = index
    msg["attrs"] = [["IFLA_ADDRESS", mac]]
    try:
        ipr.request(msg, rtnl.RTM_NEWLINK)
    except NetlinkError as exc:
        raise KernelError(f"ip link set {ifname} address {mac}", exc.errno) from exc


def _open_netns(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CniError(ERR_PLUGIN, f"cannot open the network namespace {path}: {exc.strerror}") from None


def _as_cni_error(exc: BaseException, what: str) -> CniError:
    cause = exc.__cause__ if isinstance(exc, StepError) and exc.__cause__ is not None else exc
    if isinstance(cause, CniError):
        return cause
    if isinstance(cause, SubnetExhausted):
        return CniError(ERR_ADDRESS, cause.msg)
    text = cause.msg if isinstance(cause, MinirunError) else f"{type(cause).__name__}: {cause}"
    step = f" (step {exc.step})" if isinstance(exc, StepError) else ""
    return CniError(ERR_PLUGIN, f"{what} failed{step}: {text}", "everything done so far was rolled back")


# ---------------------------------------------------------------------------------------------------- ADD


def cmd_add(conf: Conf, params: Params) -> dict[str, Any]:
    store = Store(conf.data_dir, conf.name)
    with network_lock(store):
        netns_fd = _open_netns(params.netns)
        host = Rtnl()
        container = None
        try:
            container = rtnl_in(params.netns)
            if links.get_link(container, params.ifname) is not None:
                raise CniError(
                    ERR_IFACE_EXISTS,
                    f"interface {params.ifname} already exists in {params.netns}",
                    "ADD is not idempotent: DEL the attachment first, or choose another CNI_IFNAME",
                )
            stale = store.load(params.container_id, params.ifname)
            if stale is not None:
                _refuse_if_live_elsewhere(stale, params)
                # an ADD whose DEL never came (or that was killed half-way): release what it left first
                teardown(conf, store, host, params.container_id, params.ifname, stale, [])
            try:
                return _add(conf, params, store, host, container, netns_fd)
            except CniError:
                raise
            except Exception as exc:
                raise _as_cni_error(exc, "ADD") from exc
        finally:
            os.close(netns_fd)
            host.close()
            if container is not None:
                container.close()


def _refuse_if_live_elsewhere(stale: dict[str, Any], params: Params) -> None:
    """The same container id and ifname still attached in another live netns: never tear that down."""
    other = stale.get("netns")
    if not other or other == params.netns or not os.path.exists(other):
        return
    try:
        elsewhere = rtnl_in(other)
    except OSError:
        return  # not a netns any more
    try:
        live = links.get_link(elsewhere, params.ifname) is not None
    finally:
        elsewhere.close()
    if live:
        raise CniError(
            ERR_IFACE_EXISTS,
            f"{params.container_id} ({params.ifname}) is already attached in {other}",
            "DEL that attachment first",
        )


def _add(conf: Conf, params: Params, store: Store, host: Rtnl, container: Rtnl, netns_fd: int) -> dict[str, Any]:
    net, cid, ifname = conf.network, params.container_id, params.ifname
    addresses = address_store(conf, store)
    host_veth = links.host_veth_name(cid, ifname)
    owner = port_owner(cid, ifname)
    routes = expected_routes(conf)
    state: dict[str, Any] = {"bridge_index": None}
    done: dict[str, Any] = {}
    info: dict[str, Any] = {}

    wanted = {"bridge"} | ({"ip-forward"} if conf.is_gateway else set()) | ({"nat"} if conf.ip_masq else set())
    steps = [s for s in attach.network_steps(net, host, state, done, gateway=conf.is_gateway) if s.name in wanted]

    # What DEL and GC need to find this attachment's veth and port rules; written before anything is made,
    # so they find them even when this ADD is killed half-way (its address they find by owner in IPAM).
    base_record = {
        "containerID": cid,
        "ifname": ifname,
        "netns": params.netns,
        "network": conf.name,
        "bridge": net.bridge,
        "hostVeth": host_veth,
        "ports": [list(m) for m in conf.ports],
        "portOwner": owner,
        "created": time.time(),
    }

    def intent() -> object:
        store.save({**base_record, "status": "creating"})
        return lambda: store.remove(cid, ifname)

    def reserve() -> object:
        if conf.ip is not None:
            if not addresses.claim(conf.ip, cid, ifname):
                holder = addresses.owner_of(conf.ip)
                raise CniError(ERR_ADDRESS, f"the requested address {conf.ip} is already in use by {holder}")
            addr = conf.ip
        else:
            addr = addresses.reserve(cid, ifname)
        info["address"] = ipaddress.IPv4Interface(f"{addr}/{net.subnet.prefixlen}")
        return lambda: addresses.release(addr, cid)

    def create_veth() -> object:
        try:
            links.add_veth_pair(host, host_veth, ifname, netns_fd, mtu=conf.mtu, master=state["bridge_index"])
        except KernelError as exc:
            # Our derived name is taken on the host while CNI_IFNAME is absent from the netns: the leftover of
            # an attachment of the same id whose netns died without a DEL. It is ours to replace.
            if exc.errno != errno.EEXIST:
                raise
            other = next(
                (r for r in store.records() if r.get("hostVeth") == host_veth and r.get("containerID") != cid),
                None,
            )
            if other is not None:  # two ids whose hash collides: never take another pod's link
                raise CniError(
                    ERR_PLUGIN, f"host veth name {host_veth} is taken by {other['containerID']} (hash collision)"
                ) from None
            if not links.delete_link(host, host_veth):
                raise
            links.add_veth_pair(host, host_veth, ifname, netns_fd, mtu=conf.mtu, master=state["bridge_index"])
        return lambda: links.delete_link(host, host_veth)

    def host_end_up() -> None:
        sysctl.disable_ipv6(host_veth)
        veth = links.get_link(host, host_veth)
        if veth is None:
            raise MinirunError(f"{host_veth} vanished right after it was created")
        links.set_up(host, veth.index, host_veth)
        if conf.hairpin:
            links.set_hairpin(host, veth.index, host_veth)
        info["veth_mac"] = veth.address

    def configure_iface() -> None:
        link = links.get_link(container, ifname)
        if link is None:
            raise MinirunError(f"{ifname} is missing inside {params.netns}")
        if conf.mac:
            set_mac(container, link.index, conf.mac, ifname)
        links.ensure_address(container, link.index, info["address"], ifname)
        links.set_up(container, link.index, ifname)
        info["index"] = link.index
        info["mac"] = conf.mac or link.address

    def add_routes() -> None:
        for route in routes:
            add_route(container, route.dst, route.gw or net.gateway, info["index"], ifname)

    def publish() -> object:
        with filelock.exclusive(paths.ports_lock()):
            firewall.ensure_ports(net, owner, str(info["address"].ip), conf.ports)
        return lambda: firewall.remove_ports(owner, net)

    def record() -> None:
        store.save(
            {
                **base_record,
                "address": str(info["address"]),
                "gateway": str(net.gateway),
                "mac": info["mac"],
                "routes": [[str(r.dst), str(r.gw or net.gateway)] for r in routes],
                "ipMasq": conf.ip_masq,
                "status": "ready",
            }
        )

    steps += [
        Step("intent", intent),
        Step("ipam", reserve),
        Step("veth", create_veth),
        Step("veth-up", host_end_up),
        Step(ifname, configure_iface),
        Step("routes", add_routes),
        *([Step("ports", publish)] if conf.ports else []),
        Step("record", record),
    ]
    timings: list = []
    with contextlib.ExitStack() as undo:
        run_plan(steps, undo, timings)
        undo.pop_all()
    if os.environ.get(TIMINGS_ENV):
        print("minirun-cni: ADD " + " ".join(f"{t.name}={t.seconds * 1000:.1f}ms" for t in timings), file=sys.stderr)

    result_routes = []
    for route in conf.routes:
        entry = {"dst": str(route.dst)}
        if route.gw:
            entry["gw"] = str(route.gw)
        result_routes.append(entry)
    if len(routes) > len(conf.routes):  # isDefaultGateway's own default route
        result_routes.append({"dst": str(DEFAULT_ROUTE), "gw": str(net.gateway)})
    return {
        "interfaces": [
            {"name": net.bridge, "mac": done.get("bridge-mac")},
            {"name": host_veth, "mac": info["veth_mac"]},
            {"name": ifname, "mac": info["mac"], "sandbox": params.netns},
        ],
        "ips": [{"interface": 2, "address": str(info["address"]), "gateway": str(net.gateway)}],
        "routes": result_routes,
        "dns": conf.dns,
    }


# ---------------------------------------------------------------------------------------------------- DEL / GC


def teardown(
    conf: Conf, store: Store, host: Rtnl, cid: str, ifname: str, record: dict | None, prev: list[str]
) -> list[str]:
    """Release one attachment: address, port rules, host veth (its peer goes with it), record. Best-effort:
    what is already gone is done; returns the failures."""
    errors: list[str] = []
    addresses = address_store(conf, store)

    def attempt(what: str, action) -> None:
        try:
            action()
        except Exception as exc:  # collect and carry on (CNI DEL, netavark's error list)
            errors.append(f"{what}: {exc.msg if isinstance(exc, MinirunError) else exc}")

    def release_addresses() -> None:
        # The recorded or prevResult address, and anything else IPAM holds for (container, ifname): an ADD
        # killed before its record was complete reserved one that neither names.
        wanted = {(record or {}).get("address", "").split("/", 1)[0], *prev}
        wanted |= {a for a, (o, i) in addresses.reservations().items() if o == cid and i in (ifname, "")}
        for addr in wanted - {""}:
            addresses.release(addr, cid)

    attempt("release address", release_addresses)
    if record is None or record.get("ports") or conf.ports:
        owner = (record or {}).get("portOwner") or port_owner(cid, ifname)
        # and, with the network's last port on 127.0.0.1 gone, route_localnet on its bridge
        attempt("remove port rules", lambda: firewall.remove_ports(owner, conf.network))
    veth = (record or {}).get("hostVeth") or links.host_veth_name(cid, ifname)
    attempt(f"delete {veth}", lambda: links.delete_link(host, veth))
    attempt("remove record", lambda: store.remove(cid, ifname))
    return errors


def release_network_rules(conf: Conf) -> None:
    """GC found no attachment left: remove the network's masquerade, isolation and port helper rules (the
    bridge stays, as with the reference plugin). Nothing to remove costs one `nft list`."""
    with filelock.exclusive(paths.firewall_lock()):
        firewall.remove_network(conf.network)


def cmd_del(conf: Conf, params: Params, config: dict[str, Any]) -> None:
    store = Store(conf.data_dir, conf.name)
    with network_lock(store):
        host = Rtnl()
        try:
            record = store.load(params.container_id, params.ifname)
            prev = prev_addresses(config, params.ifname)
            # The network's own rules (masquerade, isolation) stay when its last attachment goes, like the
            # bridge: re-adding a NAT base chain right after deleting one costs 15-30 ms (the kernel waits
            # out the old hook). GC with no valid attachment removes them.
            errors = teardown(conf, store, host, params.container_id, params.ifname, record, prev)
        finally:
            host.close()
    if errors:
        raise CniError(ERR_PLUGIN, "DEL could not release everything: " + "; ".join(errors))


def cmd_gc(conf: Conf, config: dict[str, Any]) -> None:
    """Release every attachment of this network that is not in cni.dev/valid-attachments."""
    valid = config.get("cni.dev/valid-attachments", [])
    if not isinstance(valid, list) or not all(
        isinstance(a, dict) and isinstance(a.get("containerID"), str) and isinstance(a.get("ifname", ""), str)
        for a in valid
    ):
        raise CniError(ERR_INVALID_CONFIG, "cni.dev/valid-attachments: expected a list of {containerID, ifname}")
    keep = {(a["containerID"], a.get("ifname", "")) for a in valid}
    store = Store(conf.data_dir, conf.name)
    errors: list[str] = []
    with network_lock(store):
        host = Rtnl()
        try:
            for record in store.records():
                key = (record.get("containerID", ""), record.get("ifname", ""))
                if key not in keep:
                    errors += teardown(conf, store, host, key[0], key[1], record, [])
            held = {(r.get("containerID"), r.get("ifname")) for r in store.records()}
            addresses = address_store(conf, store)
            for addr, (owner, ifname) in addresses.reservations().items():
                if (owner, ifname) not in keep and (owner, ifname) not in held:
                    addresses.release(addr, owner)
            if not store.records():
                release_network_rules(conf)
        finally:
            host.close()
    if errors:
        raise CniError(ERR_PLUGIN, "GC could not release everything: " + "; ".join(errors))


# ---------------------------------------------------------------------------------------------------- CHECK


def cmd_check(conf: Conf, params: Params, config: dict[str, Any]) -> None:
    store = Store(conf.data_dir, conf.name)
    cid, ifname = params.container_id, params.ifname
    with network_lock(store):
        record = store.load(cid, ifname)
        if record is None:
            raise CniError(ERR_UNKNOWN_CONTAINER, f"no attachment of {cid} ({ifname}) on network {conf.name}")
        if record.get("status") == "creating":
            raise CniError(ERR_CHECK, f"the ADD of {cid} ({ifname}) never finished", "DEL it and ADD again")
        if not os.path.exists(params.netns):
            # not 3 ("unknown container": no DEL needed): the address and rules are still held
            raise CniError(ERR_CHECK, f"the network namespace {params.netns} does not exist", "DEL the attachment")
        address = ipaddress.IPv4Interface(record["address"])
        prev = prev_addresses(config, ifname)
        if prev and str(address.ip) not in prev:
            raise CniError(ERR_CHECK, f"prevResult gives {ifname} {', '.join(prev)}, but ADD assigned {address}")

        def fail(problem: str) -> CniError:
            return CniError(ERR_CHECK, f"CHECK failed: {problem}")

        container = rtnl_in(params.netns)
        host = Rtnl()
        try:
            link = links.get_link(container, ifname)
            if link is None:
                raise fail(f"{ifname} is missing in {params.netns}")
            if not link.up:
                raise fail(f"{ifname} is down in {params.netns}")
            if record.get("mac") and link.address != record["mac"]:
                raise fail(f"{ifname} has MAC {link.address}, not {record['mac']}")
            if address not in links.addresses(container, link.index):
                raise fail(f"{ifname} in {params.netns} lacks its address {address}")
            present = {(str(r.dst), r.gateway, r.oif) for r in links.routes(container)}
            for dst, gw in record.get("routes", []):
                if (dst, gw, link.index) not in present:
                    raise fail(f"the route {dst} via {gw} dev {ifname} is missing in {params.netns}")
            addresses = address_store(conf, store)
            if addresses.owner_of(address.ip) != cid:
                raise fail(f"the IPAM record of {address.ip} is missing or held by someone else")
            bridge = links.get_link(host, record["bridge"])
            if bridge is None or bridge.kind != "bridge":
                raise fail(f"the bridge {record['bridge']} is missing")
            if conf.is_gateway:
                if conf.network.gateway_interface not in links.addresses(host, bridge.index):
                    raise fail(f"the bridge {bridge.name} lacks the gateway address {conf.network.gateway_interface}")
                if sysctl.read("net.ipv4.ip_forward") != "1":
                    raise fail("IP forwarding is off on the host (net.ipv4.ip_forward=0)")
            veth = links.get_link(host, record["hostVeth"])
            if veth is None:
                raise fail(f"the host veth {record['hostVeth']} is missing")
            if not veth.up or veth.master != bridge.index:
                raise fail(f"the host veth {veth.name} is down or not a port of {bridge.name}")
            mappings = tuple(PortMapping(*m) for m in record.get("ports") or [])
            rules = PortRules(record.get("portOwner", ""), cid, str(address.ip), mappings) if mappings else None
            found = firewall.select_driver().problems(conf.network, bool(record.get("ipMasq")), rules)
            if found:
                raise fail(found[0])
        finally:
            container.close()
            host.close()


# ---------------------------------------------------------------------------------------------------- STATUS


def cmd_status(conf: Conf) -> None:
    """Ready when the data dir is writable and nft is there (for masquerade and ports)."""
    try:
        os.makedirs(Store(conf.data_dir, conf.name).root, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise CniError(ERR_NOT_AVAILABLE, f"the data dir {conf.data_dir} is not usable: {exc.strerror}") from None
    try:
        firewall.nft_binary()
    except MinirunError as exc:
        raise CniError(ERR_NOT_AVAILABLE, exc.msg, exc.hint or "") from None
