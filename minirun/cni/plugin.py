"""ADD, DEL, CHECK, GC and STATUS: verbs over net/attachment.py and net/bridge.py.

ADD is a plan (`minirun.plan.run_plan`): the network's shared host side from `bridge.network_steps` (the
bridge, with the gateway address when isGateway; ip_forward when isGateway; the masquerade rule in `inet
minirun` when ipMasq), the `intent` record, then `attachment.plan_attach` (address, veth pair created with
its peer directly in CNI_NETNS as CNI_IFNAME, routes, published ports), then the `record`; each step pushes
its undo: a failed ADD leaves nothing behind. DEL and GC are best-effort over `attachment.plan_detach` and
find everything from the attachment record (or, without one, from prevResult, the IPAM files and the names
minirun derives from the container id), so they work with an empty CNI_NETNS and no prevResult, any number
of times. CHECK is `attachment.verify`. Every command holds the network's lock.

The CNI spec these verbs follow: https://github.com/containernetworking/cni/blob/main/SPEC.md
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
import time
from typing import Any

from minirun.cni.config import DEFAULT_ROUTE, Conf, Route, expected_routes
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
from minirun.cni.store import AttachmentStatus, LockTimeout, Store, port_owner
from minirun.errors import MinirunError, StepError
from minirun.net import attachment, bridge
from minirun.net.attachment import (
    AddressStore,
    AddressTaken,
    AttachContext,
    Attachment,
    AttachOptions,
    Detach,
    Rtnl,
    SubnetExhausted,
    has_interface,
    host_veth_name,
    open_host,
    open_netns,
    select_driver,
)
from minirun.net.ports import PortMapping
from minirun.plan import Step, run_plan

TIMINGS_ENV = "MINIRUN_CNI_TIMINGS"  # set: ADD logs how long each step took, on stderr


@contextlib.contextmanager
def network_lock(store: Store):
    try:
        with store.locked(lock_timeout()):
            yield
    except LockTimeout as exc:
        raise CniError(ERR_TRY_AGAIN, f"timed out waiting for the network lock {exc}", "try again later") from None


def address_store(conf: Conf, store: Store) -> AddressStore:
    return attachment.address_store(store.ipam_dir, conf.network, conf.range_start, conf.range_end)


def _open_netns(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CniError(ERR_PLUGIN, f"cannot open the network namespace {path}: {exc.strerror}") from None


def _as_cni_error(exc: BaseException, what: str) -> CniError:
    cause = exc.__cause__ if isinstance(exc, StepError) and exc.__cause__ is not None else exc
    if isinstance(cause, CniError):
        return cause
    if isinstance(cause, SubnetExhausted | AddressTaken):
        return CniError(ERR_ADDRESS, cause.msg)
    text = cause.msg if isinstance(cause, MinirunError) else f"{type(cause).__name__}: {cause}"
    step = f" (step {exc.step})" if isinstance(exc, StepError) else ""
    return CniError(ERR_PLUGIN, f"{what} failed{step}: {text}", "everything done so far was rolled back")


# ---------------------------------------------------------------------------------------------------- ADD


def cmd_add(conf: Conf, params: Params) -> dict[str, Any]:
    store = Store(conf.data_dir, conf.name)
    with network_lock(store):
        netns_fd = _open_netns(params.netns)
        host = open_host()
        container = None
        try:
            container = open_netns(params.netns)
            if has_interface(container, params.ifname):
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
        elsewhere = open_netns(other)
    except OSError:
        return  # not a netns any more
    try:
        live = has_interface(elsewhere, params.ifname)
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
    att = Attachment(net, host_veth_name(cid, ifname), conf.mtu, ifname)
    routes = expected_routes(conf)
    firewall, side = select_driver(), bridge.HostSide()
    wanted = {"bridge"} | ({"ip-forward"} if conf.is_gateway else set()) | ({"nat"} if conf.ip_masq else set())
    network_steps = bridge.network_steps(net, host, side, firewall, gateway=conf.is_gateway, wanted=frozenset(wanted))
    ctx = AttachContext(host, container, netns_fd, params.netns, address_store(conf, store), firewall, side)

    def claim_stale_veth(name: str) -> None:
        # Our derived name is taken on the host while CNI_IFNAME is absent from the netns: the leftover of
        # an attachment of the same id whose netns died without a DEL. It is ours to replace.
        other = next((r for r in store.records() if r.get("hostVeth") == name and r.get("containerID") != cid), None)
        if other is not None:  # two ids whose hash collides: never take another pod's link
            raise CniError(ERR_PLUGIN, f"host veth name {name} is taken by {other['containerID']} (hash collision)")

    opts = AttachOptions(
        ipam_owner=cid,
        port_owner=port_owner(cid, ifname),
        ifname=ifname,
        route_step="routes",
        routes=tuple((r.dst, r.gw or net.gateway) for r in routes),
        requested_ip=conf.ip,
        mac=conf.mac,
        hairpin=conf.hairpin,
        loopback_up=False,
        mappings=conf.ports,
        claim_stale_veth=claim_stale_veth,
        where=params.netns,
    )
    # What DEL and GC need to find this attachment's veth and port rules; written before anything is made,
    # so they find them even when this ADD is killed half-way (its address they find by owner in IPAM).
    base_record = _base_record(conf, params, att, opts)

    def intent() -> object:
        store.save({**base_record, "status": AttachmentStatus.CREATING})
        return lambda: store.remove(cid, ifname)

    def record() -> None:
        store.save({**base_record, **_attached(att, routes, conf), "status": AttachmentStatus.READY})

    steps = [*network_steps, Step("intent", intent), *attachment.plan_attach(att, ctx, opts), Step("record", record)]
    timings: list = []
    with contextlib.ExitStack() as undo:
        run_plan(steps, undo, timings)
        undo.pop_all()
    if os.environ.get(TIMINGS_ENV):
        print("minirun-cni: ADD " + " ".join(f"{t.name}={t.seconds * 1000:.1f}ms" for t in timings), file=sys.stderr)
    return _result(conf, params, att, side.bridge_mac, len(routes) > len(conf.routes))


def _base_record(conf: Conf, params: Params, att: Attachment, opts: AttachOptions) -> dict[str, Any]:
    return {
        "containerID": params.container_id,
        "ifname": params.ifname,
        "netns": params.netns,
        "network": conf.name,
        "bridge": conf.network.bridge,
        "hostVeth": att.host_veth,
        "ports": [list(m) for m in conf.ports],
        "portOwner": opts.port_owner,
        "created": time.time(),
    }


def _attached(att: Attachment, routes: list[Route], conf: Conf) -> dict[str, Any]:
    gateway = conf.network.gateway
    return {
        "address": str(att.address),
        "gateway": str(gateway),
        "mac": att.mac,
        "routes": [[str(r.dst), str(r.gw or gateway)] for r in routes],
        "ipMasq": conf.ip_masq,
    }


def _result(conf: Conf, params: Params, att: Attachment, bridge_mac: str | None, default: bool) -> dict[str, Any]:
    """The CNI result; `default`: isDefaultGateway added its own default route."""
    result_routes = []
    for route in conf.routes:
        entry = {"dst": str(route.dst)}
        if route.gw:
            entry["gw"] = str(route.gw)
        result_routes.append(entry)
    if default:
        result_routes.append({"dst": str(DEFAULT_ROUTE), "gw": str(conf.network.gateway)})
    return {
        "interfaces": [
            {"name": conf.network.bridge, "mac": bridge_mac},
            {"name": att.host_veth, "mac": att.veth_mac},
            {"name": params.ifname, "mac": att.mac, "sandbox": params.netns},
        ],
        "ips": [{"interface": 2, "address": str(att.address), "gateway": str(conf.network.gateway)}],
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

    def attempt(what: str, action) -> None:
        try:
            action()
        except Exception as exc:  # collect and carry on (CNI DEL, netavark's error list)
            errors.append(f"{what}: {exc.msg if isinstance(exc, MinirunError) else exc}")

    record_ = record or {}
    veth = record_.get("hostVeth") or host_veth_name(cid, ifname)
    with_ports = record is None or record.get("ports") or conf.ports
    detach = Detach(
        conf.network,
        cid,
        # The recorded or prevResult address, and anything else IPAM holds for (container, ifname): an ADD
        # killed before its record was complete reserved one that neither names.
        addresses=(record_.get("address", "").split("/", 1)[0], *prev),
        ifname=ifname,
        # and, with the network's last port on 127.0.0.1 gone, route_localnet on its bridge
        port_owner=(record_.get("portOwner") or port_owner(cid, ifname)) if with_ports else None,
        host_veth=veth,
    )
    steps = attachment.plan_detach(detach, address_store(conf, store), select_driver(), lambda: host, [])
    labels = {"address": "release address", "ports": "remove port rules", "veth": f"delete {veth}"}
    for name in attachment.DETACH_ORDER:
        if name in steps:
            attempt(labels[name], steps[name].apply)
    attempt("remove record", lambda: store.remove(cid, ifname))
    return errors


def release_network_rules(conf: Conf) -> None:
    """GC found no attachment left: remove the network's masquerade, isolation and port helper rules (the
    bridge stays, as with the reference plugin). Nothing to remove costs one `nft list`."""
    bridge.remove_network_rules(conf.network, select_driver())


def cmd_del(conf: Conf, params: Params, config: dict[str, Any]) -> None:
    store = Store(conf.data_dir, conf.name)
    with network_lock(store):
        host = open_host()
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
        host = open_host()
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
        if record.get("status") == AttachmentStatus.CREATING:
            raise CniError(ERR_CHECK, f"the ADD of {cid} ({ifname}) never finished", "DEL it and ADD again")
        if not os.path.exists(params.netns):
            # not 3 ("unknown container": no DEL needed): the address and rules are still held
            raise CniError(ERR_CHECK, f"the network namespace {params.netns} does not exist", "DEL the attachment")
        address = ipaddress.IPv4Interface(record["address"])
        prev = prev_addresses(config, ifname)
        if prev and str(address.ip) not in prev:
            raise CniError(ERR_CHECK, f"prevResult gives {ifname} {', '.join(prev)}, but ADD assigned {address}")
        container = open_netns(params.netns)
        host = open_host()
        try:
            expected = _expected(conf, params, record, address)
            problems = attachment.verify(expected, host, container, address_store(conf, store), select_driver())
            problem = next(problems, None)
        finally:
            container.close()
            host.close()
        if problem is not None:
            raise CniError(ERR_CHECK, f"CHECK failed: {problem}")


def _expected(conf: Conf, params: Params, record: dict[str, Any], address: ipaddress.IPv4Interface):
    mappings = tuple(PortMapping(*m) for m in record.get("ports") or [])
    owner = record.get("portOwner", "")
    return attachment.Expected(
        conf.network,
        params.ifname,
        params.netns,
        address,
        record["hostVeth"],
        params.container_id,
        mac=record.get("mac"),
        routes=tuple((dst, gw) for dst, gw in record.get("routes", [])),
        gateway=conf.is_gateway,
        masquerade=bool(record.get("ipMasq")),
        ports=attachment.PortRules(owner, params.container_id, str(address.ip), mappings) if mappings else None,
        bridge=record["bridge"],
    )


# ---------------------------------------------------------------------------------------------------- STATUS


def cmd_status(conf: Conf) -> None:
    """Ready when the data dir is writable and nft is there (for masquerade and ports)."""
    try:
        os.makedirs(Store(conf.data_dir, conf.name).root, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise CniError(ERR_NOT_AVAILABLE, f"the data dir {conf.data_dir} is not usable: {exc.strerror}") from None
    try:
        select_driver().validate()
    except MinirunError as exc:
        raise CniError(ERR_NOT_AVAILABLE, exc.msg, exc.hint or "") from None
