"""nft_ports.mapping_of_rule: a published port read back from its DNAT rule as `nft -j` lists it (a rebuilt
record takes its container's ports from there). The rules are the ones render_mappings writes, as nft 1.0
prints them."""

from minirun.net.firewall.nft_ports import mapping_of_rule
from minirun.net.ports import PortMapping

LOCAL = {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}
NOT_LOOPBACK = {
    "match": {
        "op": "!=",
        "left": {"payload": {"protocol": "ip", "field": "daddr"}},
        "right": {"prefix": {"addr": "127.0.0.0", "len": 8}},
    }
}


def daddr(address: str) -> dict:
    return {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": address}}


def dport(proto: str, port: int) -> dict:
    return {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "dport"}}, "right": port}}


def dnat(address: str, port: int) -> dict:
    return {"dnat": {"family": "ip", "addr": address, "port": port}}


def test_every_local_address():
    prerouting = {"expr": [LOCAL, NOT_LOOPBACK, dport("tcp", 8080), dnat("10.77.0.2", 80)]}
    output = {"expr": [LOCAL, dport("tcp", 8080), dnat("10.77.0.2", 80)]}
    expected = (PortMapping("0.0.0.0", 8080, 80, "tcp"), "10.77.0.2")
    assert mapping_of_rule(prerouting) == expected and mapping_of_rule(output) == expected


def test_one_host_address_and_udp():
    rule = {"expr": [daddr("127.0.0.1"), dport("udp", 8081), dnat("10.77.0.2", 81)]}
    assert mapping_of_rule(rule) == (PortMapping("127.0.0.1", 8081, 81, "udp"), "10.77.0.2")


def test_any_other_rule_is_none():
    assert mapping_of_rule({"expr": [LOCAL, {"masquerade": None}]}) is None
    assert mapping_of_rule({"expr": [dport("tcp", 53), {"accept": None}]}) is None
    assert mapping_of_rule({}) is None
