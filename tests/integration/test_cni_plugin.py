"""minirun-cni exec'd as a runtime does (environment + stdin), inside the sandbox: the captured Podman,
containerd and cnitool calls replayed, then each behaviour of the spec (DEL idempotence, CHECK, errors, ports,
GC, parallel ADDs) checked against what the kernel, nftables and the data dir show."""

from __future__ import annotations

import copy
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import host_links, nft_ruleset

PLUGIN = str(Path(sys.executable).parent / "minirun-cni")
CAPTURES = Path(__file__).resolve().parent.parent / "cni_captures"
SUBNET = "10.125.9.0/24"
GATEWAY = "10.125.9.1"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "cni-data"


@pytest.fixture
def netns():
    """make(name) -> /run/netns/NAME, a fresh namespace; all deleted afterwards."""
    made = []

    def make(name: str) -> str:
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        return f"/run/netns/{name}"

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


@pytest.fixture(autouse=True)
def _no_bridges_left():
    yield
    for name, link in host_links().items():
        if link["kind"] == "bridge":
            subprocess.run(["ip", "link", "delete", name], capture_output=True)
    subprocess.run(["nft", "delete", "table", "inet", "minirun"], capture_output=True)


def conflist(data_dir: Path, version: str = "1.0.0", **extra) -> dict:
    conf = {
        "cniVersion": version,
        "name": "cnitest",
        "type": "minirun-cni",
        "bridge": "cnitest0",
        "isGateway": True,
        "ipMasq": True,
        "ipam": {
            "type": "host-local",
            "dataDir": str(data_dir),
            "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
            "routes": [{"dst": "0.0.0.0/0"}],
        },
    }
    conf.update(extra)
    return conf


def cni(
    command: str,
    conf: dict | str | None,
    *,
    netns: str = "",
    cid: str = "c1",
    ifname: str = "eth0",
    args: str = "",
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    environ.update(
        CNI_COMMAND=command,
        CNI_CONTAINERID=cid,
        CNI_NETNS=netns,
        CNI_IFNAME=ifname,
        CNI_ARGS=args,
        CNI_PATH="/opt/cni/bin",
    )
    environ.update(env or {})
    for key in [k for k, v in environ.items() if v is None]:
        del environ[key]
    stdin = conf if isinstance(conf, str) else json.dumps(conf) if conf is not None else ""
    return subprocess.run([PLUGIN], input=stdin, capture_output=True, text=True, env=environ, timeout=30)


def ok(proc: subprocess.CompletedProcess) -> dict | None:
    assert proc.returncode == 0, f"rc={proc.returncode} stdout={proc.stdout} stderr={proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def error(proc: subprocess.CompletedProcess, code: int) -> dict:
    assert proc.returncode != 0, proc.stdout
    body = json.loads(proc.stdout)
    assert set(body) == {"cniVersion", "code", "msg", "details"}
    assert body["code"] == code, body
    return body


def in_ns(path: str, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", Path(path).name, *cmd], capture_output=True, text=True).stdout


def reservations(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.glob("*/ipam/*") if p.name[0].isdigit())


def attachments(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.glob("*/attachments/*.json"))


def rules() -> list[dict]:
    found = json.loads(subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True).stdout)
    return [i["rule"] for i in found["nftables"] if "rule" in i]


def veths() -> list[str]:
    return [name for name, link in host_links().items() if link["kind"] == "veth"]


def network_rule(rule: dict) -> bool:
    """The network's own masquerade/isolation rules, which outlive its attachments (as the bridge does)."""
    return "network=" in rule.get("comment", "")  # masquerade, isolation, the port helpers of its bridge


def assert_nothing_left(data_dir: Path, *, network_rules_too: bool = False) -> None:
    """Nothing of any attachment: no veth, address, record, port rule (with network_rules_too, after GC,
    not even the network's own rules)."""
    assert veths() == []
    assert reservations(data_dir) == []
    assert attachments(data_dir) == []
    left = rules() if network_rules_too else [r for r in rules() if not network_rule(r)]
    assert left == [], nft_ruleset()


# ------------------------------------------------------------------------------------------------ replay


def _captured(name: str) -> list[dict]:
    """The plugin's own lines (not the delegated IPAM/firewall ones) and the markers, in order."""
    lines = [json.loads(line) for line in (CAPTURES / name).read_text().splitlines() if line.strip()]
    return [d for d in lines if "marker" in d or d.get("as") in ("labcni", "labcni11")]


def _rewrite(stdin: dict, data_dir: Path, netns_map: dict[str, str]) -> dict:
    conf = copy.deepcopy(stdin)
    conf["type"] = "minirun-cni"
    conf.pop("labLog", None)
    conf["ipam"]["type"] = "host-local"  # the captures say "labipam"; minirun-cni accepts any
    conf["ipam"]["dataDir"] = str(data_dir)
    for iface in (conf.get("prevResult") or {}).get("interfaces", []):
        if "sandbox" in iface:
            iface["sandbox"] = netns_map.get(iface["sandbox"], iface["sandbox"])
    return conf


def _same_shape(ours: dict, theirs: dict, netns: str) -> None:
    assert set(ours) == set(theirs)
    assert ours["cniVersion"] == theirs["cniVersion"]
    assert [set(i) for i in ours["interfaces"]] == [set(i) for i in theirs["interfaces"]]
    assert ours["interfaces"][0]["name"] == theirs["interfaces"][0]["name"]  # the bridge
    assert ours["interfaces"][1]["name"].startswith("veth")
    assert ours["interfaces"][2]["name"] == theirs["interfaces"][2]["name"]
    assert ours["interfaces"][2]["sandbox"] == netns
    assert [set(i) for i in ours["ips"]] == [set(i) for i in theirs["ips"]]
    for mine, captured in zip(ours["ips"], theirs["ips"], strict=True):
        assert mine["interface"] == captured["interface"] == 2
        assert mine["gateway"] == captured["gateway"]
        assert mine["address"].rsplit(".", 1)[0] == captured["address"].rsplit(".", 1)[0]
        assert mine.get("version") == captured.get("version")
    assert ours["routes"] == theirs["routes"]
    assert ours["dns"] == theirs["dns"]


def _kernel_matches(result: dict, netns: str) -> None:
    address = result["ips"][0]["address"]
    ifname = result["interfaces"][2]["name"]
    shown = in_ns(netns, "ip", "-o", "-4", "addr", "show", "dev", ifname)
    assert address in shown
    assert f"default via {result['ips'][0]['gateway']} dev {ifname}" in in_ns(netns, "ip", "route")
    links = host_links()
    bridge = links[result["interfaces"][0]["name"]]
    veth = links[result["interfaces"][1]["name"]]
    assert veth["master"] == bridge["index"] and veth["up"]
    subnet = address.rsplit(".", 1)[0] + ".0/24"
    assert any(
        "masquerade" in json.dumps(r["expr"]) and subnet.split("/")[0] in json.dumps(r["expr"]) for r in rules()
    ), nft_ruleset()


@pytest.mark.parametrize("capture", ["cnitool.jsonl", "containerd.jsonl", "containerd-port.jsonl", "podman.jsonl"])
def test_replay_captured_calls(capture: str, data_dir: Path, netns) -> None:
    netns_map: dict[str, str] = {}
    results: dict[tuple, dict] = {}
    last_marker = ""
    replayed = 0
    for entry in _captured(capture):
        if "marker" in entry:
            last_marker = entry["marker"]
            continue
        env = dict(entry["env"])
        command, cid, ifname = env["CNI_COMMAND"], env["CNI_CONTAINERID"], env["CNI_IFNAME"]
        if env["CNI_NETNS"] and env["CNI_NETNS"] not in netns_map:
            netns_map[env["CNI_NETNS"]] = netns(f"r{len(netns_map)}")
        path = netns_map.get(env["CNI_NETNS"], "")
        conf = _rewrite(entry["stdin"], data_dir, netns_map)
        key = (conf["name"], cid, ifname)
        if "prevResult" in conf and key in results:
            conf["prevResult"] = results[key]  # what a runtime does: it hands back the result it got
        if "link set eth0 down" in last_marker and command == "CHECK":
            in_ns(path, "ip", "link", "set", ifname, "down")
            last_marker = ""
        proc = cni(command, conf, netns=path, cid=cid, ifname=ifname, args=env.get("CNI_ARGS", ""))
        if entry["rc"] != 0:
            error(proc, 103)
        elif command == "ADD":
            result = ok(proc)
            _same_shape(result, entry["stdout"], path)
            _kernel_matches(result, path)
            if "IP=" in env["CNI_ARGS"] or "MAC=" in env["CNI_ARGS"]:
                args = dict(pair.split("=", 1) for pair in env["CNI_ARGS"].split(";"))
                if "IP" in args:
                    assert result["ips"][0]["address"] == f"{args['IP']}/24"
                if "MAC" in args:
                    assert result["interfaces"][2]["mac"] == args["MAC"]
            for mapping in (conf.get("runtimeConfig") or {}).get("portMappings", []):
                port = mapping.get("hostPort") or mapping.get("HostPort")
                assert f"dport {port} dnat ip to {result['ips'][0]['address'].split('/')[0]}:" in nft_ruleset()
            results[key] = result
        else:
            assert ok(proc) is None
        replayed += 1
    assert replayed >= 4
    assert_nothing_left(data_dir)


# ------------------------------------------------------------------------------------------------ ADD / DEL


def test_add_returns_the_full_result_and_the_kernel_shows_it(data_dir: Path, netns) -> None:
    ns = netns("a")
    result = ok(cni("ADD", conflist(data_dir), netns=ns, cid="c1"))
    assert result["cniVersion"] == "1.0.0"
    bridge, veth, eth0 = result["interfaces"]
    assert bridge["name"] == "cnitest0" and "sandbox" not in bridge
    assert veth["name"].startswith("veth") and "sandbox" not in veth
    assert eth0 == {"name": "eth0", "mac": eth0["mac"], "sandbox": ns}
    assert result["ips"] == [{"interface": 2, "address": "10.125.9.2/24", "gateway": GATEWAY}]
    assert result["routes"] == [{"dst": "0.0.0.0/0"}]
    assert result["dns"] == {}
    _kernel_matches(result, ns)
    assert (
        f"{GATEWAY}/24"
        in subprocess.run(["ip", "-o", "addr", "show", "cnitest0"], capture_output=True, text=True).stdout
    )
    assert eth0["mac"] in in_ns(ns, "ip", "link", "show", "eth0")
    assert attachments(data_dir) == ["c1@eth0.json"] and reservations(data_dir) == ["10.125.9.2"]
    ok(cni("DEL", conflist(data_dir), netns=ns, cid="c1"))
    assert_nothing_left(data_dir)


def test_del_is_idempotent_without_prevresult_and_without_netns(data_dir: Path, netns) -> None:
    ns = netns("a")
    conf = conflist(data_dir)
    result = ok(cni("ADD", conf, netns=ns, cid="c1"))
    # containerd: a DEL with prevResult, then more without it and with an empty CNI_NETNS
    assert ok(cni("DEL", {**conf, "prevResult": result}, netns=ns, cid="c1")) is None
    assert_nothing_left(data_dir)
    assert ok(cni("DEL", {**conf, "prevResult": result}, netns=ns, cid="c1")) is None
    assert ok(cni("DEL", conf, netns="", cid="c1")) is None
    assert ok(cni("DEL", conf, netns="/run/netns/gone", cid="c1")) is None
    assert_nothing_left(data_dir)


def test_del_with_empty_netns_and_no_prevresult_still_releases_everything(data_dir: Path, netns) -> None:
    ns = netns("a")
    conf = conflist(data_dir, runtimeConfig={"portMappings": [{"HostPort": 18089, "ContainerPort": 80}]})
    ok(cni("ADD", conf, netns=ns, cid="c1"))
    assert len(veths()) == 1 and reservations(data_dir) and rules()
    ok(cni("DEL", conf, netns="", cid="c1"))
    assert_nothing_left(data_dir)


def test_del_of_one_attachment_keeps_the_others(data_dir: Path, netns) -> None:
    conf = conflist(data_dir)
    first = ok(cni("ADD", conf, netns=netns("a"), cid="c1"))
    ok(cni("ADD", conf, netns=netns("b"), cid="c2"))
    ok(cni("DEL", conf, netns="", cid="c2"))
    assert reservations(data_dir) == [first["ips"][0]["address"].split("/")[0]]
    assert len(veths()) == 1 and any(r["chain"] == "masq-cni-cnitest" for r in rules())
    ok(cni("CHECK", conf, netns="/run/netns/a", cid="c1"))
    ok(cni("DEL", conf, netns="/run/netns/a", cid="c1"))
    assert_nothing_left(data_dir)


def test_add_fails_when_the_interface_exists_and_leaves_nothing(data_dir: Path, netns) -> None:
    ns = netns("a")
    subprocess.run(["ip", "-n", "a", "link", "add", "eth0", "type", "veth", "peer", "name", "other0"], check=True)
    body = error(cni("ADD", conflist(data_dir), netns=ns), 101)
    assert "eth0 already exists" in body["msg"]
    assert veths() == [] and reservations(data_dir) == [] and attachments(data_dir) == []


def test_second_add_of_the_same_attachment_fails(data_dir: Path, netns) -> None:
    ns = netns("a")
    ok(cni("ADD", conflist(data_dir), netns=ns))
    error(cni("ADD", conflist(data_dir), netns=ns), 101)
    assert len(reservations(data_dir)) == 1
    ok(cni("DEL", conflist(data_dir), netns=ns))
    assert_nothing_left(data_dir)


def test_a_failed_add_rolls_back_every_step(data_dir: Path, netns) -> None:
    ns = netns("a")
    conf = conflist(data_dir, runtimeConfig={"portMappings": [{"hostPort": 18090, "containerPort": 80}]})
    for step in ("veth", "routes", "ports"):
        body = error(cni("ADD", conf, netns=ns, env={"MINIRUN_TEST_FAIL_AFTER_STEP": step}), 100)
        assert f"step {step}" in body["msg"]
        assert veths() == [] and reservations(data_dir) == [] and attachments(data_dir) == []
        assert "eth0" not in in_ns(ns, "ip", "link")
        assert not [r for r in rules() if "port owner" in (r.get("comment") or "")]
    ok(cni("ADD", conf, netns=ns))
    ok(cni("DEL", conf, netns=ns))
    assert_nothing_left(data_dir)


def test_ip_and_mac_from_cni_args_and_runtime_config(data_dir: Path, netns) -> None:
    a, b, c = netns("a"), netns("b"), netns("c")
    args = "IgnoreUnknown=1;K8S_POD_NAME=x;MAC=02:00:0a:7d:09:4d;IP=10.125.9.77"
    result = ok(cni("ADD", conflist(data_dir), netns=a, cid="c1", args=args))
    assert result["ips"][0]["address"] == "10.125.9.77/24"
    assert result["interfaces"][2]["mac"] == "02:00:0a:7d:09:4d"
    assert "02:00:0a:7d:09:4d" in in_ns(a, "ip", "link", "show", "eth0")
    body = error(cni("ADD", conflist(data_dir), netns=b, cid="c2", args="IP=10.125.9.77"), 102)
    assert "10.125.9.77" in body["msg"]
    runtime = {"ips": ["10.125.9.78/24"], "mac": "02:00:00:00:00:78"}
    result = ok(cni("ADD", conflist(data_dir, runtimeConfig=runtime), netns=c, cid="c3"))
    assert result["ips"][0]["address"] == "10.125.9.78/24"
    assert result["interfaces"][2]["mac"] == "02:00:00:00:00:78"
    error(cni("ADD", conflist(data_dir), netns=b, cid="c2", args="IP=10.99.0.5"), 7)
    for cid, ns in (("c1", a), ("c2", b), ("c3", c)):
        ok(cni("DEL", conflist(data_dir), netns=ns, cid=cid))
    assert_nothing_left(data_dir)


def test_a_040_config_gets_a_040_result(data_dir: Path, netns) -> None:
    ns = netns("a")
    result = ok(cni("ADD", conflist(data_dir, version="0.4.0"), netns=ns))
    assert result["cniVersion"] == "0.4.0"
    assert result["ips"] == [{"version": "4", "interface": 2, "address": "10.125.9.2/24", "gateway": GATEWAY}]
    ok(cni("DEL", {**conflist(data_dir, version="0.4.0"), "prevResult": result}, netns=ns))
    assert_nothing_left(data_dir)


def test_not_a_gateway_and_no_masquerade(data_dir: Path, netns) -> None:
    ns = netns("a")
    conf = conflist(data_dir, isGateway=False, ipMasq=False)
    conf["ipam"]["routes"] = []
    result = ok(cni("ADD", conf, netns=ns))
    assert result["routes"] == []
    assert (
        "inet " not in subprocess.run(["ip", "-o", "addr", "show", "cnitest0"], capture_output=True, text=True).stdout
    )
    assert rules() == [] and "default" not in in_ns(ns, "ip", "route")
    ok(cni("DEL", conf, netns=ns))
    conf = conflist(data_dir, isDefaultGateway=True)
    conf["ipam"]["routes"] = [{"dst": "192.0.2.0/24", "gw": "10.125.9.254"}]
    result = ok(cni("ADD", conf, netns=ns))
    assert result["routes"] == [{"dst": "192.0.2.0/24", "gw": "10.125.9.254"}, {"dst": "0.0.0.0/0", "gw": GATEWAY}]
    shown = in_ns(ns, "ip", "route")
    assert "192.0.2.0/24 via 10.125.9.254 dev eth0" in shown and f"default via {GATEWAY} dev eth0" in shown
    ok(cni("CHECK", conf, netns=ns))
    ok(cni("DEL", conf, netns=ns))
    assert_nothing_left(data_dir)


# ------------------------------------------------------------------------------------------------ CHECK


def test_check_passes_then_fails_when_the_link_is_down_or_the_address_gone(data_dir: Path, netns) -> None:
    a, b = netns("a"), netns("b")
    conf = conflist(data_dir, runtimeConfig={"portMappings": [{"hostPort": 18091, "containerPort": 80}]})
    result = ok(cni("ADD", conf, netns=a, cid="c1"))
    ok(cni("ADD", conf, netns=b, cid="c2"))
    assert ok(cni("CHECK", {**conf, "prevResult": result}, netns=a, cid="c1")) is None
    assert ok(cni("CHECK", conf, netns=a, cid="c1")) is None  # from the record alone
    in_ns(a, "ip", "link", "set", "eth0", "down")
    assert "eth0 is down" in error(cni("CHECK", {**conf, "prevResult": result}, netns=a, cid="c1"), 103)["msg"]
    in_ns(b, "ip", "addr", "flush", "dev", "eth0")
    assert "lacks its address" in error(cni("CHECK", conf, netns=b, cid="c2"), 103)["msg"]
    error(cni("CHECK", conf, netns=a, cid="nobody"), 3)
    for cid in ("c1", "c2"):
        ok(cni("DEL", conf, netns="", cid=cid))
    assert_nothing_left(data_dir)


def test_check_notices_missing_rules(data_dir: Path, netns) -> None:
    ns = netns("a")
    conf = conflist(data_dir)
    ok(cni("ADD", conf, netns=ns))
    subprocess.run(["nft", "flush", "chain", "inet", "minirun", "masq-cni-cnitest"], check=True)
    assert "masquerade" in error(cni("CHECK", conf, netns=ns), 103)["msg"]
    ok(cni("DEL", conf, netns=ns))
    assert_nothing_left(data_dir)


# ------------------------------------------------------------------------------------------------ ports


@pytest.mark.parametrize(
    "mapping",
    [
        {"hostPort": 18092, "containerPort": 80, "protocol": "tcp"},
        {"HostPort": 18092, "ContainerPort": 80, "Protocol": "tcp", "HostIP": "127.0.0.1"},
        {"hostPort": 18092, "containerPort": 53, "protocol": "udp", "hostIP": ""},
    ],
)
def test_port_mappings_in_both_spellings_become_dnat_rules(mapping: dict, data_dir: Path, netns) -> None:
    ns = netns("a")
    conf = conflist(data_dir, capabilities={"portMappings": True}, runtimeConfig={"portMappings": [mapping]})
    result = ok(cni("ADD", conf, netns=ns, cid="c1"))
    address = result["ips"][0]["address"].split("/")[0]
    container_port = mapping.get("containerPort") or mapping.get("ContainerPort")
    text = nft_ruleset()
    assert f"dport 18092 dnat ip to {address}:{container_port}" in text
    assert 'comment "minirun port owner=cni:c1:eth0"' in text
    ok(cni("DEL", {**conf, "prevResult": result}, netns=ns, cid="c1"))
    assert "dport 18092" not in nft_ruleset() and "owner=cni:c1" not in nft_ruleset()
    assert_nothing_left(data_dir)


# ------------------------------------------------------------------------------------------------ GC / STATUS / VERSION


def test_gc_keeps_valid_attachments_and_releases_the_others(data_dir: Path, netns) -> None:
    conf = conflist(
        data_dir, version="1.1.0", runtimeConfig={"portMappings": [{"hostPort": 18093, "containerPort": 80}]}
    )
    kept = ok(cni("ADD", conf, netns=netns("a"), cid="keep"))
    conf.pop("runtimeConfig")
    for cid, name in (("gone1", "b"), ("gone2", "c")):
        ok(cni("ADD", conf, netns=netns(name), cid=cid))
    # an address with no record (an ADD that crashed between IPAM and the record)
    (data_dir / "cnitest" / "ipam" / "10.125.9.200").write_text("crashed\neth0")
    assert len(veths()) == 3
    gc_conf = {**conf, "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    assert ok(cni("GC", gc_conf, cid="", ifname="", netns="")) is None
    assert attachments(data_dir) == ["keep@eth0.json"]
    assert reservations(data_dir) == [kept["ips"][0]["address"].split("/")[0]]
    assert veths() == [kept["interfaces"][1]["name"]]
    assert "minirun port owner=cni:keep:eth0" in nft_ruleset()
    ok(cni("CHECK", conf, netns="/run/netns/a", cid="keep"))
    ok(cni("GC", {**conf, "cni.dev/valid-attachments": []}, cid="", ifname="", netns=""))
    assert_nothing_left(data_dir, network_rules_too=True)


def test_gc_and_status_need_a_11_config(data_dir: Path) -> None:
    assert ok(cni("STATUS", conflist(data_dir, version="1.1.0"), cid="", ifname="")) is None
    error(cni("STATUS", conflist(data_dir), cid="", ifname=""), 1)
    error(cni("GC", conflist(data_dir), cid="", ifname=""), 1)


@pytest.mark.parametrize(
    "stdin,answer_version,has_11",
    [
        ('{"cniVersion": "1.0.0"}', "1.0.0", False),
        ('{"cniVersion": "0.4.0"}', "0.4.0", False),
        ('{"cniVersion": "1.1.0"}', "1.1.0", True),
        ("", "1.0.0", False),
    ],
)
def test_version(stdin: str, answer_version: str, has_11: bool) -> None:
    answer = ok(cni("VERSION", stdin, cid="", ifname="", env={"CNI_PATH": None}))
    assert answer["cniVersion"] == answer_version
    assert answer["supportedVersions"][:4] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
    assert ("1.1.0" in answer["supportedVersions"]) is has_11


def test_a_11_config_gets_a_11_result_but_a_10_config_never_does(data_dir: Path, netns) -> None:
    ns = netns("a")
    assert ok(cni("ADD", conflist(data_dir, version="1.1.0"), netns=ns))["cniVersion"] == "1.1.0"
    ok(cni("DEL", conflist(data_dir, version="1.1.0"), netns=ns))
    assert ok(cni("ADD", conflist(data_dir), netns=ns))["cniVersion"] == "1.0.0"
    ok(cni("DEL", conflist(data_dir), netns=ns))
    assert_nothing_left(data_dir)


# ------------------------------------------------------------------------------------------------ errors


def test_error_json_for_each_code(data_dir: Path, netns) -> None:
    ns = netns("a")
    conf = conflist(data_dir)
    assert "CNI_COMMAND" in error(cni("ADD", conf, netns=ns, env={"CNI_COMMAND": None}), 4)["msg"]
    assert "CNI_COMMAND" in error(cni("FROB", conf, netns=ns), 4)["msg"]
    assert "CNI_NETNS" in error(cni("ADD", conf, netns=""), 4)["msg"]
    assert "CNI_CONTAINERID" in error(cni("ADD", conf, netns=ns, cid=""), 4)["msg"]
    assert "CNI_IFNAME" in error(cni("DEL", conf, netns=ns, ifname=""), 4)["msg"]
    assert "FOO" in error(cni("ADD", conf, netns=ns, args="FOO=bar"), 4)["msg"]
    assert error(cni("ADD", "{not json", netns=ns), 6)["cniVersion"] == "1.0.0"
    body = error(cni("ADD", {**conf, "cniVersion": "0.2.0"}, netns=ns), 1)
    assert "0.2.0" in body["msg"]
    bad_subnet = conflist(data_dir)
    bad_subnet["ipam"]["ranges"][0][0]["subnet"] = "10.125.9.0/33"
    assert "ipam.ranges[0][0].subnet" in error(cni("ADD", bad_subnet, netns=ns), 7)["msg"]
    assert "mtu" in error(cni("ADD", {**conf, "mtu": "big"}, netns=ns), 7)["msg"]
    assert "ipam" in error(cni("ADD", {k: v for k, v in conf.items() if k != "ipam"}, netns=ns), 7)["msg"]
    ports = {"portMappings": [{"hostPort": 0, "containerPort": 80}]}
    assert "portMappings[0].hostPort" in error(cni("ADD", {**conf, "runtimeConfig": ports}, netns=ns), 7)["msg"]
    # the 0.4.0 caller gets its error in 0.4.0
    assert error(cni("ADD", {**bad_subnet, "cniVersion": "0.4.0"}, netns=ns), 7)["cniVersion"] == "0.4.0"
    assert_nothing_left(data_dir)


def test_lock_timeout_is_try_again(data_dir: Path, netns) -> None:
    ns = netns("a")
    lock_dir = data_dir / "cnitest"
    lock_dir.mkdir(parents=True)
    with open(lock_dir / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        body = error(cni("ADD", conflist(data_dir), netns=ns, env={"MINIRUN_CNI_LOCK_TIMEOUT": "0.3"}), 11)
        assert "lock" in body["msg"]
    assert_nothing_left(data_dir)


# ------------------------------------------------------------------------------------------------ parallel


def test_parallel_adds_get_distinct_addresses(data_dir: Path, netns) -> None:
    conf = json.dumps(conflist(data_dir))
    spaces = [netns(f"p{i}") for i in range(8)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    procs = [
        subprocess.Popen(
            [PLUGIN],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **base,
                "CNI_COMMAND": "ADD",
                "CNI_CONTAINERID": f"p{i}",
                "CNI_NETNS": path,
                "CNI_IFNAME": "eth0",
                "CNI_PATH": "/opt/cni/bin",
            },
        )
        for i, path in enumerate(spaces)
    ]
    outputs = [p.communicate(conf, timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    addresses = [json.loads(out)["ips"][0]["address"] for out, _ in outputs]
    assert len(set(addresses)) == 8
    assert len(veths()) == 8 and len(attachments(data_dir)) == 8
    for i, path in enumerate(spaces):
        ok(cni("DEL", conflist(data_dir), netns=path, cid=f"p{i}"))
    assert_nothing_left(data_dir)


# ------------------------------------------------------------------------------------------------ review fixes


def test_an_add_killed_half_way_is_released_by_gc_and_del(data_dir: Path, netns) -> None:
    """An ADD killed after its veth and port rules but before its final record left a "creating" record
    (written first) and an IPAM file: GC and DEL release the veth, the port rules and the address."""
    conf = conflist(data_dir, runtimeConfig={"portMappings": [{"hostPort": 18094, "containerPort": 80}]})
    for cid, name in (("k1", "ka"), ("k2", "kb")):
        ok(cni("ADD", conf, netns=netns(name), cid=cid))
        record_path = data_dir / "cnitest" / "attachments" / f"{cid}@eth0.json"
        record = json.loads(record_path.read_text())
        crashed = {k: v for k, v in record.items() if k not in ("address", "mac", "routes")}
        record_path.write_text(json.dumps({**crashed, "status": "creating"}))
    assert len(veths()) == 2 and "owner=cni:k1:eth0" in nft_ruleset()
    error(cni("CHECK", conf, netns="/run/netns/ka", cid="k1"), 103)  # the ADD never finished
    gc = {**conflist(data_dir, version="1.1.0"), "cni.dev/valid-attachments": [{"containerID": "k2", "ifname": "eth0"}]}
    ok(cni("GC", gc, cid="", ifname="", netns=""))
    assert len(veths()) == 1 and "owner=cni:k1:eth0" not in nft_ruleset()
    assert len(reservations(data_dir)) == 1
    ok(cni("DEL", conf, netns="", cid="k2"))  # no prevResult, no address in the record: found by owner
    assert_nothing_left(data_dir)


def test_the_same_attachment_live_in_another_netns_is_refused(data_dir: Path, netns) -> None:
    conf = conflist(data_dir)
    ok(cni("ADD", conf, netns=netns("first"), cid="c1"))
    error(cni("ADD", conf, netns=netns("second"), cid="c1"), 101)
    ok(cni("CHECK", conf, netns="/run/netns/first", cid="c1"))  # the first one was not touched
    ok(cni("DEL", conf, netns="/run/netns/first", cid="c1"))
    assert_nothing_left(data_dir)


def test_check_needs_040_and_sees_a_missing_dnat_rule(data_dir: Path, netns) -> None:
    error(cni("CHECK", conflist(data_dir, version="0.3.1"), netns="/run/netns/x", cid="c1"), 1)
    conf = conflist(data_dir, runtimeConfig={"portMappings": [{"hostPort": 18095, "containerPort": 80}]})
    ok(cni("ADD", conf, netns=netns("a"), cid="c1"))
    ok(cni("CHECK", conf, netns="/run/netns/a", cid="c1"))
    found = json.loads(
        subprocess.run(
            ["nft", "-j", "-a", "list", "chain", "inet", "minirun", "ports-prerouting"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    handle = next(i["rule"]["handle"] for i in found["nftables"] if "rule" in i and "18095" in json.dumps(i))
    subprocess.run(["nft", "delete", "rule", "inet", "minirun", "ports-prerouting", "handle", str(handle)], check=True)
    assert "port rules" in error(cni("CHECK", conf, netns="/run/netns/a", cid="c1"), 103)["msg"]
    ok(cni("DEL", conf, netns="/run/netns/a", cid="c1"))
    assert_nothing_left(data_dir)


def test_a_held_firewall_lock_is_try_again_not_a_hang(data_dir: Path, netns, state_dir: Path) -> None:
    lock = state_dir / "firewall.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        body = error(cni("ADD", conflist(data_dir), netns=netns("a"), env={"MINIRUN_CNI_LOCK_TIMEOUT": "0.2"}), 11)
        assert "timed out" in body["msg"]
    assert_nothing_left(data_dir)


@pytest.mark.parametrize(
    "change,field",
    [
        ({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.125.9.0/24"}], 5]}}, "ipam.ranges[1]"),
        ({"runtimeConfig": {"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": 5}]}}, "protocol"),
        ({"ipam": {"type": "host-local", "subnet": "10.125.9.0/24", "routes": [{"dst": 5}]}}, "routes[0].dst"),
        ({"runtimeConfig": {"ips": "10.125.9.9"}}, "runtimeConfig.ips"),
        ({"ipam": [1]}, "ipam"),
    ],
)
def test_bad_config_values_are_invalid_config(data_dir: Path, change: dict, field: str) -> None:
    conf = {**conflist(data_dir), **change}
    assert field in error(cni("ADD", conf, netns="/run/netns/none", cid="c1"), 7)["msg"]


def test_check_sees_the_gateway_address_and_forwarding(data_dir: Path, netns) -> None:
    conf = conflist(data_dir)
    ok(cni("ADD", conf, netns=netns("a"), cid="c1"))
    subprocess.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
    try:
        assert "forwarding" in error(cni("CHECK", conf, netns="/run/netns/a", cid="c1"), 103)["msg"]
    finally:
        subprocess.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
    subprocess.run(["ip", "addr", "flush", "dev", "cnitest0"], check=True)
    assert "gateway address" in error(cni("CHECK", conf, netns="/run/netns/a", cid="c1"), 103)["msg"]
    ok(cni("DEL", conf, netns="/run/netns/a", cid="c1"))
    assert_nothing_left(data_dir)


def test_route_localnet_is_released_by_del_and_gc(data_dir: Path, netns) -> None:
    """Issue 12, hole 4 (CVE-2020-8558 class): a port on 127.0.0.1 makes the bridge route 127/8 (with the
    guard); DEL and GC of the last such attachment switch route_localnet back to 0 and drop the guard."""
    conf = conflist(
        data_dir,
        version="1.1.0",
        runtimeConfig={"portMappings": [{"hostPort": 18096, "containerPort": 80, "hostIP": "127.0.0.1"}]},
    )
    localnet = Path("/proc/sys/net/ipv4/conf/cnitest0/route_localnet")
    first = ok(cni("ADD", conf, netns=netns("a"), cid="c1"))
    conf["runtimeConfig"]["portMappings"][0]["hostPort"] = 18097
    ok(cni("ADD", conf, netns=netns("b"), cid="c2"))
    assert localnet.read_text().strip() == "1"
    assert 'comment "minirun localnet-guard"' in nft_ruleset()
    subprocess.run(["nft", "flush", "chain", "inet", "minirun", "localnet-guard"], check=True)
    assert (
        "the 127/8 guard (chain localnet-guard) is missing"
        in error(cni("CHECK", conf, netns="/run/netns/b", cid="c2"), 103)["msg"]
    )
    ok(cni("DEL", {**conf, "prevResult": first}, netns="/run/netns/a", cid="c1"))
    assert localnet.read_text().strip() == "1"  # c2's port still needs it
    ok(cni("GC", {**conf, "cni.dev/valid-attachments": []}, cid="", ifname="", netns=""))
    assert localnet.read_text().strip() == "0"
    assert "localnet-guard" not in "".join(r.get("comment", "") for r in rules())
    assert_nothing_left(data_dir, network_rules_too=True)
