from pathlib import Path

from minirun.net import firewall
from minirun.net.network import default_network

GOLDEN = Path(__file__).resolve().parents[2] / "golden"


def test_masquerade_matches_golden():
    assert firewall.render_masquerade(default_network()) == (GOLDEN / "masquerade-minirun.nft").read_text()


def test_forward_accepts_match_golden():
    target = firewall.ForeignDrop("ip", "filter", "DOCKER-USER")
    assert (
        firewall.render_forward_accepts(default_network(), target)
        == (GOLDEN / "forward-accepts-docker-user.nft").read_text()
    )


def test_find_foreign_drop_prefers_docker_user():
    chains = [
        {"metainfo": {}},
        {"chain": {"family": "inet", "table": "minirun", "name": "masq-minirun", "hook": "postrouting"}},
        {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "policy": "drop"}},
        {"chain": {"family": "ip", "table": "filter", "name": "DOCKER-USER"}},
    ]
    assert firewall.find_foreign_drop(chains) == firewall.ForeignDrop("ip", "filter", "DOCKER-USER")
    assert firewall.find_foreign_drop(chains[:3]) == firewall.ForeignDrop("ip", "filter", "FORWARD")


def test_no_foreign_drop_when_forward_accepts():
    chains = [
        {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "policy": "accept"}},
        {"chain": {"family": "ip", "table": "filter", "name": "DOCKER-USER"}},
    ]
    assert firewall.find_foreign_drop(chains) is None


def test_rule_handles_by_comment():
    rules = [
        {"rule": {"handle": 4, "comment": "minirun network=minirun"}},
        {"rule": {"handle": 5, "comment": "someone else"}},
        {"chain": {}},
    ]
    assert firewall.rule_handles(rules, "minirun network=minirun") == [4]


def _output_rule(comment: str, daddr: str | None, target: str) -> dict:
    expr: list[dict] = [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 1}}]
    if daddr is None:
        expr.insert(
            0, {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}
        )
    else:
        expr.insert(
            0, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": daddr}}
        )
    expr.append({"dnat": {"family": "ip", "addr": target, "port": 80}})
    return {"rule": {"family": "inet", "table": "minirun", "chain": "ports-output", "comment": comment, "expr": expr}}


def test_loopback_targets_are_the_ports_the_host_reaches_on_127():
    """Issue 12, hole 4: route_localnet stays on only for ports reachable on 127.0.0.1 (127.x or 0.0.0.0)."""
    from minirun.net.firewall import nft_ports as ports

    rules = [
        _output_rule("minirun port owner=a", "127.0.0.1", "10.77.0.2"),
        _output_rule("minirun port owner=b", None, "10.78.0.2"),  # 0.0.0.0
        _output_rule("minirun port owner=c", "198.51.100.1", "10.79.0.2"),  # a specific host address
        _output_rule("something else", "127.0.0.1", "10.80.0.2"),
    ]
    assert [str(a) for a in ports.loopback_targets(rules)] == ["10.77.0.2", "10.78.0.2"]


def test_the_guard_is_host_wide_and_tagged_on_its_own():
    from minirun.net.firewall import nft_ports as ports

    guard = ports.render_guard()
    assert 'iifname != "lo" ip daddr 127.0.0.0/8 drop comment "minirun localnet-guard"' in guard
    assert "localnet-guard" not in ports.render_network_rules("minirun0", "10.77.0.0/16")
