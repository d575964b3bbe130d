"""Host veth names and interface-name limits (IFNAMSIZ)."""

from minirun.net.links import host_veth_name, valid_ifname


def test_host_veth_name_is_stable_short_and_prefixed():
    name = host_veth_name("0123456789ab")
    assert name == host_veth_name("0123456789ab")
    assert name != host_veth_name("0123456789ac")
    assert name.startswith("veth") and len(name) == 12 and valid_ifname(name)
    int(name[4:], 16)


def test_valid_ifname_limits():
    assert valid_ifname("a" * 15)
    assert not valid_ifname("a" * 16)
    assert not valid_ifname("a/b") and not valid_ifname("") and not valid_ifname("a b")
