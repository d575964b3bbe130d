"""The network configuration, validated into minirun's `Network` and the plugin's options.

Keys mean what they mean to the reference `bridge` plugin (containernetworking/plugins): `bridge` (default
cni0), `isGateway`, `isDefaultGateway` (implies isGateway), `ipMasq`, `mtu`, `hairpinMode`; `ipam` is served
by minirun's own IPAM whatever its `type` says (runtimes write "host-local"): `subnet` or `ranges` (the
first range set; `rangeStart`/`rangeEnd`), `gateway`, `routes`, `dataDir`. Invalid values are error 7 and the
message names the field.
"""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

from minirun.cni.protocol import ERR_INVALID_CONFIG, CniError, Params
from minirun.net.network import Network
from minirun.net.ports import PortMapping

DEFAULT_BRIDGE = "cni0"  # the reference bridge plugin's default
DEFAULT_MTU = 1500
DEFAULT_DATA_DIR = "/var/lib/cni/minirun"
# minirun's own networks are named without this prefix, so a CNI network never shares their nft chains.
NETWORK_PREFIX = "cni-"
DEFAULT_ROUTE = ipaddress.IPv4Network("0.0.0.0/0")


class Route(NamedTuple):
    dst: ipaddress.IPv4Network
    gw: ipaddress.IPv4Address | None


class Conf(NamedTuple):
    name: str  # the CNI network name
    network: Network  # minirun's view: bridge, subnet, gateway, mtu
    is_gateway: bool
    is_default_gateway: bool
    ip_masq: bool
    hairpin: bool
    mtu: int
    data_dir: str
    range_start: ipaddress.IPv4Address | None
    range_end: ipaddress.IPv4Address | None
    routes: tuple[Route, ...]
    dns: dict
    ports: tuple[PortMapping, ...]
    ip: ipaddress.IPv4Address | None  # requested by CNI_ARGS IP= or runtimeConfig.ips
    mac: str | None  # requested by CNI_ARGS MAC= or runtimeConfig.mac


def _invalid(field: str, problem: str, hint: str = "") -> CniError:
    return CniError(ERR_INVALID_CONFIG, f"invalid network configuration: {field}: {problem}", hint)


def _address(text: Any, field: str) -> ipaddress.IPv4Address:
    if not isinstance(text, str):
        raise _invalid(field, f"expected an IPv4 address, got {text!r}")
    try:
        return ipaddress.IPv4Address(text.split("/", 1)[0])
    except ValueError:
        raise _invalid(field, f"{text!r} is not an IPv4 address") from None


def _subnet(text: Any, field: str) -> ipaddress.IPv4Network:
    if not isinstance(text, str):
        raise _invalid(field, f"expected a CIDR such as 10.244.0.0/24, got {text!r}")
    try:
        subnet = ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise _invalid(field, f"{text!r} is not an IPv4 CIDR ({exc})", "use a CIDR such as 10.244.0.0/24") from None
    if subnet.prefixlen > 30:
        raise _invalid(field, f"{subnet} is too small", "use a prefix of /30 or shorter")
    return subnet


def valid_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and bool(name)
        and name[0].isascii()
        and name[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "_.-") for c in name)
    )


def valid_mac(mac: str) -> bool:
    parts = mac.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts)


def _ipam_range(ipam: dict) -> dict:
    """The range this plugin allocates from: `ipam.subnet` (host-local's old form) or ranges[0][0]."""
    if "ranges" in ipam:
        ranges = ipam["ranges"]
        if not isinstance(ranges, list) or not ranges or not isinstance(ranges[0], list) or not ranges[0]:
            raise _invalid("ipam.ranges", "expected a non-empty list of range sets", '[[{"subnet": "10.244.0.0/24"}]]')
        first = ranges[0][0]
        if not isinstance(first, dict):
            raise _invalid("ipam.ranges[0][0]", "expected an object with a subnet")
        for i, range_set in enumerate(ranges):
            if not isinstance(range_set, list) or not all(isinstance(r, dict) for r in range_set):
                raise _invalid(f"ipam.ranges[{i}]", "expected a list of range objects")
        ipv4 = [r for rs in ranges for r in rs if isinstance(r, dict) and ":" not in str(r.get("subnet", ""))]
        chosen = ipv4[0] if ipv4 else first
        return {**chosen, "_field": "ipam.ranges[0][0]"}
    if "subnet" in ipam:
        return {
            "subnet": ipam["subnet"],
            "gateway": ipam.get("gateway"),
            "rangeStart": ipam.get("rangeStart"),
            "rangeEnd": ipam.get("rangeEnd"),
            "_field": "ipam",
        }
    raise _invalid("ipam", "needs subnet or ranges", 'e.g. "ipam": {"type": "host-local", "subnet": "10.244.0.0/24"}')


def parse_port_mappings(items: Any) -> tuple[PortMapping, ...]:
    """runtimeConfig.portMappings: Podman's and cnitool's `hostPort` keys and containerd's `HostPort` ones."""
    if items is None:
        return ()
    if not isinstance(items, list):
        raise _invalid("runtimeConfig.portMappings", "expected a list")
    found = []
    for i, item in enumerate(items):
        field = f"runtimeConfig.portMappings[{i}]"
        if not isinstance(item, dict):
            raise _invalid(field, "expected an object")

        def get(key: str, item: dict = item) -> Any:
            return item.get(key, item.get(key[0].upper() + key[1:]))

        host_ip = get("hostIP") or "0.0.0.0"
        if isinstance(host_ip, str) and ":" in host_ip:  # an IPv6 mapping: this plugin is IPv4 only
            continue
        address = _address(host_ip, f"{field}.hostIP")
        ports = []
        for key in ("hostPort", "containerPort"):
            value = get(key)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
                raise _invalid(f"{field}.{key}", f"expected a port 1-65535, got {value!r}")
            ports.append(value)
        proto = get("protocol") or "tcp"
        if not isinstance(proto, str):
            raise _invalid(f"{field}.protocol", f"expected tcp or udp, got {proto!r}")
        proto = proto.lower()
        if proto not in ("tcp", "udp"):
            raise _invalid(f"{field}.protocol", f"expected tcp or udp, got {proto!r}")
        found.append(PortMapping(str(address), ports[0], ports[1], proto))
    return tuple(found)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_ifname(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) < 16 and "/" not in value and not any(c.isspace() for c in value)


def _is_mtu(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 68 <= value <= 65535


# The plain top-level keys: (key, default, valid, problem, hint), checked in this order.
_BOOL = (False, _is_bool, lambda v: f"expected true or false, got {v!r}", "")
FIELDS: dict[str, tuple] = {
    "name": (None, valid_name, lambda v: f"{v!r} is not a valid network name", "[a-zA-Z0-9][a-zA-Z0-9_.-]*"),
    "bridge": (DEFAULT_BRIDGE, _is_ifname, lambda v: f"{v!r} is not a valid interface name", "at most 15 characters"),
    "isDefaultGateway": _BOOL,
    "isGateway": _BOOL,
    "mtu": (DEFAULT_MTU, _is_mtu, lambda v: f"expected 68-65535, got {v!r}", ""),
    "ipMasq": _BOOL,
    "hairpinMode": _BOOL,
}


def _field(config: dict, key: str) -> Any:
    default, valid, problem, hint = FIELDS[key]
    value = config.get(key, default)
    if not valid(value):
        raise _invalid(key, problem(value), hint)
    return value


def _ipam(config: dict) -> dict:
    ipam = config.get("ipam")
    if not isinstance(ipam, dict):
        problem = "missing" if ipam is None else f"expected an object, got {ipam!r}"
        raise _invalid("ipam", problem, '"ipam": {"type": "host-local", "subnet": "10.244.0.0/24"}')
    data_dir = ipam.get("dataDir", DEFAULT_DATA_DIR)
    if not isinstance(data_dir, str) or not data_dir.startswith("/"):
        raise _invalid("ipam.dataDir", f"expected an absolute path, got {data_dir!r}")
    return ipam


def _range(ipam: dict) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address, list]:
    """The subnet, gateway and [rangeStart, rangeEnd] (None: unbounded) to allocate from."""
    rng = _ipam_range(ipam)
    where = rng["_field"]
    subnet = _subnet(rng.get("subnet"), f"{where}.subnet")
    hosts = (subnet.network_address + 1, subnet.broadcast_address - 1)
    gateway = _address(rng["gateway"], f"{where}.gateway") if rng.get("gateway") else hosts[0]
    if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
        raise _invalid(f"{where}.gateway", f"{gateway} is not a host address of {subnet}")
    bounds = []
    for key in ("rangeStart", "rangeEnd"):
        value = _address(rng[key], f"{where}.{key}") if rng.get(key) else None
        if value is not None and not hosts[0] <= value <= hosts[1]:
            raise _invalid(f"{where}.{key}", f"{value} is not a host address of {subnet}")
        bounds.append(value)
    if bounds[0] and bounds[1] and bounds[0] > bounds[1]:
        raise _invalid(f"{where}.rangeStart", f"{bounds[0]} is after rangeEnd {bounds[1]}")
    return subnet, gateway, bounds


def _routes(ipam: dict) -> tuple[Route, ...]:
    routes = []
    raw_routes = ipam.get("routes", [])
    if not isinstance(raw_routes, list):
        raise _invalid("ipam.routes", "expected a list of {dst, gw}")
    for i, route in enumerate(raw_routes):
        if not isinstance(route, dict):
            raise _invalid(f"ipam.routes[{i}]", "expected an object with dst")
        if not isinstance(route.get("dst"), str):
            raise _invalid(f"ipam.routes[{i}].dst", f"expected a CIDR string, got {route.get('dst')!r}")
        if ":" in route["dst"]:
            continue  # IPv6 route: nothing of ours to route it
        try:
            dst = ipaddress.IPv4Network(route.get("dst"), strict=False)
        except (ValueError, TypeError):
            raise _invalid(f"ipam.routes[{i}].dst", f"{route.get('dst')!r} is not an IPv4 CIDR") from None
        gw = _address(route["gw"], f"ipam.routes[{i}].gw") if route.get("gw") else None
        routes.append(Route(dst, gw))
    return tuple(routes)


def _dns_and_runtime(config: dict, ipam: dict) -> tuple[dict, dict]:
    dns = config.get("dns")
    if dns is None:
        dns = ipam.get("dns") or {}
    if not isinstance(dns, dict):
        raise _invalid("dns", "expected an object with nameservers, domain, search, options")
    runtime = config.get("runtimeConfig") or {}
    if not isinstance(runtime, dict):
        raise _invalid("runtimeConfig", "expected an object")
    return dns, runtime


def _requested_ip(args: dict, runtime: dict, subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address):
    """CNI_ARGS IP= or the first IPv4 of runtimeConfig.ips; None when neither asks."""
    wanted_ips = runtime.get("ips") or []
    if not isinstance(wanted_ips, list) or not all(isinstance(a, str) for a in wanted_ips):
        raise _invalid("runtimeConfig.ips", f"expected a list of address strings, got {wanted_ips!r}")
    requested = args.get("IP") or next((a for a in wanted_ips if ":" not in a), None)
    if not requested:
        return None
    field = "CNI_ARGS IP" if args.get("IP") else "runtimeConfig.ips"
    ip = _address(requested.split(",")[0], field)
    if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address, gateway):
        raise _invalid(field, f"{ip} is not a free host address of {subnet} (gateway {gateway})")
    return ip


def _requested_mac(args: dict, runtime: dict) -> str | None:
    mac = args.get("MAC") or runtime.get("mac") or None
    if mac is not None and (not isinstance(mac, str) or not valid_mac(mac)):
        raise _invalid("CNI_ARGS MAC" if args.get("MAC") else "runtimeConfig.mac", f"{mac!r} is not a MAC address")
    return mac.lower() if mac else None


def parse(config: dict[str, Any], params: Params | None = None) -> Conf:
    """Validate `config` (and the IP=/MAC= of CNI_ARGS) without touching anything. Each check's error names
    its field; they run in a fixed order, so a config with several problems always reports the same one."""
    name, bridge, is_default_gateway, is_gateway, mtu = (
        _field(config, key) for key in ("name", "bridge", "isDefaultGateway", "isGateway", "mtu")
    )
    ipam = _ipam(config)
    subnet, gateway, bounds = _range(ipam)
    routes = _routes(ipam)
    dns, runtime = _dns_and_runtime(config, ipam)
    ports = parse_port_mappings(runtime.get("portMappings"))
    args = params.args if params is not None else {}
    ip = _requested_ip(args, runtime, subnet, gateway)
    mac = _requested_mac(args, runtime)
    return Conf(
        name=name,
        network=Network(name=f"{NETWORK_PREFIX}{name}", bridge=bridge, subnet=subnet, gateway=gateway, mtu=mtu),
        is_gateway=is_gateway or is_default_gateway,
        is_default_gateway=is_default_gateway,
        ip_masq=_field(config, "ipMasq"),
        hairpin=_field(config, "hairpinMode"),
        mtu=mtu,
        data_dir=ipam.get("dataDir", DEFAULT_DATA_DIR),
        range_start=bounds[0],
        range_end=bounds[1],
        routes=routes,
        dns=dns,
        ports=ports,
        ip=ip,
        mac=mac,
    )


def expected_routes(conf: Conf) -> list[Route]:
    """ipam.routes (a missing gw means the network's gateway), plus the default route for isDefaultGateway."""
    routes = list(conf.routes)
    if conf.is_default_gateway and not any(r.dst == DEFAULT_ROUTE for r in routes):
        routes.append(Route(DEFAULT_ROUTE, conf.network.gateway))
    return routes
