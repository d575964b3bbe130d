"""attachment.inspect / problems / verify against a real attachment (issue 14 C22 prep: doctor and CNI CHECK
share them). Each test makes the attachment with the plan a run executes, breaks one thing the way a hostile
process or a sick host would (route deleted from inside the netns, host veth deleted, masquerade flushed by a
firewall reload), and asserts the exact problem from what the kernel shows; a check that missed the damage
would report nothing and fail the test."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from minirun.net import attachment, bridge
from minirun.net.attachment import Attachment, AttachOptions, Detach
from minirun.net.network import from_record, has_resolver
from minirun.net.survey import survey
from minirun.plan import run_plan

OWNER = "c0ffee000001"
NETWORK = from_record(
    {"name": "chk", "bridge": "chk0", "subnet": "10.231.0.0/24", "gateway": "10.231.0.1", "mtu": 1500}
)


@pytest.fixture
def attached(tmp_path: Path):
    """A container-like attachment on NETWORK (nft driver): (expected, host, container, store, firewall)."""
    subprocess.run(["ip", "netns", "add", "chk-ns"], check=True)
    firewall = attachment.select_driver("nft")
    store = attachment.address_store(str(tmp_path / "ipam"), NETWORK)
    host, container = attachment.open_host(), attachment.open_netns("/run/netns/chk-ns")
    fd = os.open("/run/netns/chk-ns", os.O_RDONLY)
    try:
        ctx = attachment.AttachContext(host, container, fd, "/run/netns/chk-ns", store, firewall, bridge.HostSide())
        att = Attachment(NETWORK, attachment.host_veth_name(OWNER), 1500)
        opts = AttachOptions(ipam_owner=OWNER, port_owner=OWNER, published=dict)
        with contextlib.ExitStack() as undo:
            run_plan(
                [*bridge.network_steps(NETWORK, host, ctx.side, firewall), *attachment.plan_attach(att, ctx, opts)],
                undo,
            )
            undo.pop_all()
        expected = attachment.Expected.of_runtime(att.as_record(), NETWORK, OWNER, "/run/netns/chk-ns")
        yield expected, host, container, store, firewall
    finally:
        os.close(fd)
        detach = Detach(NETWORK, OWNER, addresses=(str(expected.address.ip),), host_veth=expected.host_veth)
        for step in attachment.plan_detach(detach, store, firewall, lambda: host, []).values():
            step.apply()
        bridge.remove_network_rules(NETWORK, firewall)
        subprocess.run(["ip", "link", "delete", NETWORK.bridge], capture_output=True)
        subprocess.run(["ip", "netns", "delete", "chk-ns"], capture_output=True)
        host.close()
        container.close()


def test_a_fresh_attachment_has_no_problem_and_every_fact_is_read(attached):
    expected, host, container, store, firewall = attached
    state = attachment.inspect(expected, host, container, store, firewall)
    assert list(attachment.problems(expected, state)) == []
    assert state.lo.up and state.iface.up and expected.address in state.addresses
    assert state.ipam_owner == OWNER and state.ip_forward == "1" and state.veth_on_bridge
    assert NETWORK.gateway_interface in state.bridge_addresses


def test_a_route_deleted_inside_the_netns_is_reported(attached):
    expected, *sockets = attached
    subprocess.run(["ip", "-n", "chk-ns", "route", "del", "default"], check=True)
    assert list(attachment.verify(expected, *sockets)) == [
        "the route 0.0.0.0/0 via 10.231.0.1 dev eth0 is missing in /run/netns/chk-ns"
    ]


def test_a_deleted_host_veth_takes_eth0_and_that_is_the_first_problem(attached):
    expected, *sockets = attached
    subprocess.run(["ip", "link", "delete", expected.host_veth], check=True)
    found = list(attachment.verify(expected, *sockets))
    assert found[0] == "eth0 is missing in /run/netns/chk-ns" and len(found) == 1


def test_a_flushed_masquerade_is_reported(attached):
    """A firewall reload (`nft flush ruleset`) drops minirun's rules: CHECK and doctor must notice."""
    expected, *sockets = attached
    subprocess.run(["nft", "flush", "ruleset"], check=True)
    assert list(attachment.verify(expected, *sockets)) == [
        "the masquerade rule for 10.231.0.0/24 is missing in table inet minirun"
    ]


def test_survey_shows_the_bridge_its_port_and_its_rules(attached):
    expected, host, _container, _store, firewall = attached
    found = survey(host, [NETWORK], firewall)
    (chk,) = found.bridges
    assert chk.link.name == "chk0" and chk.link.up and chk.has_gateway and chk.masquerade
    assert [port.name for port in chk.ports] == [expected.host_veth]
    assert chk.addresses == [NETWORK.gateway_interface]
    assert chk.rules.dns_guard is (True if has_resolver(NETWORK) else None)
    assert chk.rules.foreign_drop is None and found.rules.leaked == []
    assert found.sysctls["net.ipv4.ip_forward"] == "1"


def test_survey_finds_a_missing_bridge_a_foreign_drop_and_a_leaked_rule(attached):
    """What doctor must see: another tool's DROP forward chain without minirun's accepts (until the network's
    rules are ensured again), a rule left tagged for a network that is gone (and deletes it), a bridge that
    does not exist."""
    _expected, host, _container, _store, firewall = attached
    gone = from_record({"name": "gone", "bridge": "gone0", "subnet": "10.232.0.0/24", "gateway": "10.232.0.1"})
    nft("add table ip filter")
    nft("add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }")
    nft('add rule inet minirun isolation counter comment "minirun network=gone"')
    try:
        found = survey(host, [NETWORK, gone], firewall)
        chk, missing = found.bridges
        assert missing.link is None and missing.ports == [] and not missing.has_gateway
        assert chk.rules.foreign_drop == ("ip", "filter", "FORWARD") and not chk.rules.foreign_accepts
        (leaked,) = survey(host, [NETWORK], firewall).rules.leaked
        assert (leaked.where, leaked.comment) == ("inet minirun isolation", "minirun network=gone")
        firewall.delete_leaked(leaked)
        firewall.ensure_network(NETWORK)
        after = survey(host, [NETWORK], firewall)
        assert after.rules.leaked == [] and after.bridges[0].rules.foreign_accepts
        assert "minirun network=gone" not in nft("list ruleset")
    finally:
        nft("delete table ip filter")


def nft(command: str) -> str:
    """One nft command (nft joins its arguments into one command line)."""
    return subprocess.run(["nft", command], capture_output=True, text=True, check=True).stdout
