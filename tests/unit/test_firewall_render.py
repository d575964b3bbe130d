from pathlib import Path

from minirun.net import firewall
from minirun.net.network import default_network

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


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
