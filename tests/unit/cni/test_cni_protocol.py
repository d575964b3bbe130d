"""The CNI wire protocol and configuration parsing of minirun-cni: pure, no root."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from minirun.cni import config, protocol
from minirun.cni.main import run
from minirun.cni.protocol import CniError
from minirun.net.ports import PortMapping

CAPTURES = Path(__file__).resolve().parents[2] / "cni_captures"
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc",
    "CNI_NETNS": "/run/netns/a",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/x",
}


def conf(**extra) -> dict:
    base = {
        "cniVersion": "1.0.0",
        "name": "lab",
        "type": "minirun-cni",
        "ipam": {"type": "host-local", "subnet": "10.244.1.0/24", "dataDir": "/tmp/x"},
    }
    base.update(extra)
    return base


def code_of(fn, *args) -> CniError:
    with pytest.raises(CniError) as info:
        fn(*args)
    return info.value


# ---------------------------------------------------------------------------------------------- environment


def test_parse_env_reads_every_parameter() -> None:
    params = protocol.parse_env({**ENV, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.0.0.5;X=1"})
    assert params.command == "ADD" and params.container_id == "abc" and params.ifname == "eth0"
    assert params.netns == "/run/netns/a" and params.path == "/x"
    assert params.args["IP"] == "10.0.0.5" and params.args["K8S_POD_NAME"] == "web"


@pytest.mark.parametrize(
    "env,needle",
    [
        ({k: v for k, v in ENV.items() if k != "CNI_COMMAND"}, "CNI_COMMAND"),
        ({**ENV, "CNI_COMMAND": "FROB"}, "FROB"),
        ({**ENV, "CNI_NETNS": ""}, "CNI_NETNS"),
        ({**ENV, "CNI_CONTAINERID": ""}, "CNI_CONTAINERID"),
        ({**ENV, "CNI_CONTAINERID": "a/b"}, "CNI_CONTAINERID"),
        ({**ENV, "CNI_IFNAME": "x" * 16}, "CNI_IFNAME"),
        ({**ENV, "CNI_PATH": ""}, "CNI_PATH"),
        ({**ENV, "CNI_ARGS": "NOPE=1"}, "NOPE"),
        ({**ENV, "CNI_ARGS": "novalue"}, "novalue"),
    ],
)
def test_bad_environment_is_code_4(env: dict, needle: str) -> None:
    err = code_of(protocol.parse_env, env)
    assert err.code == protocol.ERR_INVALID_ENV and needle in err.msg


def test_del_needs_no_netns_and_version_needs_nothing() -> None:
    assert protocol.parse_env({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}).netns == ""
    assert protocol.parse_env({"CNI_COMMAND": "VERSION"}).command == "VERSION"


def test_ignore_unknown_accepts_any_key() -> None:
    assert protocol.parse_args("IgnoreUnknown=true;FOO=bar") == {"IgnoreUnknown": "true", "FOO": "bar"}
    assert protocol.parse_args("") == {}


# ---------------------------------------------------------------------------------------------- versions


def test_load_config_rejects_what_is_not_a_json_object() -> None:
    assert code_of(protocol.load_config, b"{nope").code == protocol.ERR_DECODE
    assert code_of(protocol.load_config, b"[1]").code == protocol.ERR_DECODE
    assert code_of(protocol.load_config, b"").code == protocol.ERR_DECODE


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_supported_versions(version: str) -> None:
    assert protocol.check_version({"cniVersion": version}, "ADD") == version


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "2.0.0", None])
def test_unsupported_versions_are_code_1(version: str | None) -> None:
    config_ = {} if version is None else {"cniVersion": version}
    assert code_of(protocol.check_version, config_, "ADD").code == protocol.ERR_INCOMPATIBLE_VERSION


def test_gc_and_status_need_11() -> None:
    for command in ("GC", "STATUS"):
        assert code_of(protocol.check_version, {"cniVersion": "1.0.0"}, command).code == 1
        assert protocol.check_version({"cniVersion": "1.1.0"}, command) == "1.1.0"


def test_version_answer_offers_11_only_to_a_11_caller() -> None:
    assert protocol.version_answer({"cniVersion": "1.0.0"}) == {
        "cniVersion": "1.0.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"],
    }
    assert "1.1.0" in protocol.version_answer({"cniVersion": "1.1.0"})["supportedVersions"]
    assert protocol.version_answer({})["cniVersion"] == "1.0.0"
    assert protocol.version_answer({"cniVersion": "0.2.0"})["cniVersion"] == "1.0.0"


def test_version_through_the_entry_point() -> None:
    answer = run({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert answer["cniVersion"] == "0.4.0" and "1.1.0" not in answer["supportedVersions"]


RESULT = {
    "interfaces": [
        {"name": "cni0", "mac": "aa"},
        {"name": "veth1", "mac": "bb"},
        {"name": "eth0", "mac": "cc", "sandbox": "/n"},
    ],
    "ips": [{"interface": 2, "address": "10.0.0.2/24", "gateway": "10.0.0.1"}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {},
}


def test_render_result_per_version_matches_the_captures() -> None:
    captured = {}
    for line in (CAPTURES / "podman.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("as") == "labcni" and entry["env"]["CNI_COMMAND"] == "ADD":
            captured.setdefault(entry["stdout"]["cniVersion"], entry["stdout"])
    for version in ("0.4.0", "1.0.0"):
        ours = protocol.render_result(RESULT, version)
        theirs = captured[version]
        assert list(ours) == list(theirs)
        assert [list(ip) for ip in ours["ips"]] == [list(ip) for ip in theirs["ips"]]
    assert protocol.render_result(RESULT, "0.3.1")["ips"][0]["version"] == "4"
    assert "version" not in protocol.render_result(RESULT, "1.1.0")["ips"][0]


def test_error_json() -> None:
    err = CniError(7, "invalid network configuration: mtu: expected 68-65535", "hint")
    assert err.as_json("1.0.0") == {"cniVersion": "1.0.0", "code": 7, "msg": err.msg, "details": "hint"}
    assert protocol.error_version({"cniVersion": "0.4.0"}) == "0.4.0"
    assert protocol.error_version({"cniVersion": "9"}) == "1.0.0"
    assert protocol.error_version(None) == "1.0.0"


def test_prev_addresses_picks_the_interface() -> None:
    prev = {"prevResult": {**RESULT, "ips": [*RESULT["ips"], {"address": "fd00::2/64", "interface": 2}]}}
    assert protocol.prev_addresses(prev, "eth0") == ["10.0.0.2"]
    assert protocol.prev_addresses(prev, "net1") == []
    assert protocol.prev_addresses({}, "eth0") == []


# ---------------------------------------------------------------------------------------------- configuration


def test_defaults_are_the_reference_bridge_plugins() -> None:
    parsed = config.parse(conf())
    assert parsed.network.bridge == "cni0" and parsed.network.name == "cni-lab"
    assert parsed.network.subnet == ipaddress.IPv4Network("10.244.1.0/24")
    assert str(parsed.network.gateway) == "10.244.1.1"
    assert (parsed.is_gateway, parsed.is_default_gateway, parsed.ip_masq, parsed.hairpin) == (False,) * 4
    assert parsed.mtu == 1500 and parsed.routes == () and parsed.ports == ()
    assert config.parse({**conf(), "ipam": {"subnet": "10.244.1.0/24"}}).data_dir == config.DEFAULT_DATA_DIR


def test_ranges_gateway_routes_and_bounds() -> None:
    ipam = {
        "type": "host-local",
        "ranges": [
            [{"subnet": "fd00::/64"}],
            [
                {
                    "subnet": "10.125.6.0/24",
                    "gateway": "10.125.6.254",
                    "rangeStart": "10.125.6.10",
                    "rangeEnd": "10.125.6.20",
                }
            ],
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.0.2.0/24", "gw": "10.125.6.9"}, {"dst": "::/0"}],
    }
    parsed = config.parse(conf(ipam=ipam, isDefaultGateway=True, bridge="br-x", mtu=1400))
    assert str(parsed.network.gateway) == "10.125.6.254" and parsed.is_gateway
    assert (str(parsed.range_start), str(parsed.range_end)) == ("10.125.6.10", "10.125.6.20")
    assert [(str(r.dst), r.gw and str(r.gw)) for r in parsed.routes] == [
        ("0.0.0.0/0", None),
        ("192.0.2.0/24", "10.125.6.9"),
    ]
    assert parsed.mtu == 1400 and parsed.network.bridge == "br-x"


@pytest.mark.parametrize(
    "change,field",
    [
        ({"name": "bad name"}, "name"),
        ({"bridge": "x" * 16}, "bridge"),
        ({"isGateway": "yes"}, "isGateway"),
        ({"ipMasq": 1}, "ipMasq"),
        ({"mtu": 10}, "mtu"),
        ({"ipam": None}, "ipam"),
        ({"ipam": {"type": "host-local"}}, "ipam"),
        ({"ipam": {"subnet": "10.0.0.0/33"}}, "ipam.subnet"),
        ({"ipam": {"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}}, "ipam.gateway"),
        ({"ipam": {"subnet": "10.0.0.0/24", "dataDir": "relative"}}, "ipam.dataDir"),
        ({"ipam": {"ranges": []}}, "ipam.ranges"),
        ({"ipam": {"ranges": [[{"subnet": "nope"}]]}}, "ipam.ranges[0][0].subnet"),
        ({"ipam": {"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}]]}}, "rangeStart"),
        ({"ipam": {"subnet": "10.0.0.0/24", "routes": [{"dst": "x"}]}}, "ipam.routes[0].dst"),
        ({"runtimeConfig": {"portMappings": [{"hostPort": 80}]}}, "portMappings[0].containerPort"),
        ({"runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 8, "protocol": "sctp"}]}}, "protocol"),
        ({"runtimeConfig": {"mac": "zz"}}, "runtimeConfig.mac"),
        ({"runtimeConfig": {"ips": ["10.9.9.9/24"]}}, "runtimeConfig.ips"),
    ],
)
def test_invalid_configuration_is_code_7_and_names_the_field(change: dict, field: str) -> None:
    err = code_of(config.parse, conf(**change))
    assert err.code == protocol.ERR_INVALID_CONFIG
    assert field in err.msg


def test_port_mappings_in_both_spellings() -> None:
    podman = {"hostPort": 18091, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}
    containerd = {"HostPort": 18089, "ContainerPort": 80, "Protocol": "UDP", "HostIP": ""}
    ipv6 = {"hostPort": 1, "containerPort": 1, "hostIP": "::1"}
    assert config.parse_port_mappings([podman, containerd, ipv6]) == (
        PortMapping("127.0.0.1", 18091, 80, "tcp"),
        PortMapping("0.0.0.0", 18089, 80, "udp"),
    )


def test_ip_and_mac_from_cni_args_win_over_runtime_config() -> None:
    params = protocol.parse_env({**ENV, "CNI_ARGS": "IP=10.244.1.7;MAC=02:00:00:00:00:07"})
    parsed = config.parse(conf(runtimeConfig={"ips": ["10.244.1.8/24"], "mac": "02:00:00:00:00:08"}), params)
    assert str(parsed.ip) == "10.244.1.7" and parsed.mac == "02:00:00:00:00:07"
    parsed = config.parse(conf(runtimeConfig={"ips": ["fd00::8/64", "10.244.1.8/24"]}))
    assert str(parsed.ip) == "10.244.1.8"
    for bad in ("10.244.1.1", "10.244.1.0", "10.244.1.255", "10.9.0.1"):
        params = protocol.parse_env({**ENV, "CNI_ARGS": f"IP={bad}"})
        assert "CNI_ARGS IP" in code_of(config.parse, conf(), params).msg


def test_every_captured_configuration_parses() -> None:
    count = 0
    for path in CAPTURES.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("as") in ("labcni", "labcni11"):
                params = protocol.parse_env({**entry["env"], "CNI_NETNS": entry["env"]["CNI_NETNS"] or "/x"})
                parsed = config.parse(entry["stdin"], params)
                assert parsed.is_gateway and parsed.ip_masq and parsed.network.subnet.prefixlen == 24
                count += 1
    assert count > 30
