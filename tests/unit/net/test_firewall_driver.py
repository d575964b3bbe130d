"""The firewall driver interface (issue 14 C15): net/ asks a FirewallDriver for a network's and a port's
rules; `nft` is the default and `none` writes nothing (hosts with only --network none|host, plan tests).

The holes these close: a driver that drifts from the interface (a renamed method, a missing argument) would
only fail on the first real run that reaches it; a `none` driver that quietly wrote rules, or accepted
published ports it cannot honour, would make `-p` a silent no-op."""

from __future__ import annotations

import inspect
import shutil
import subprocess

import pytest

from minirun.errors import ConfigError
from minirun.net import firewall
from minirun.net.attachment_check import PortRules
from minirun.net.firewall import FirewallDriver, select_driver
from minirun.net.firewall.nft import NftDriver
from minirun.net.firewall.none import NoneDriver
from minirun.net.network import default_network
from minirun.net.ports import PortMapping

PROTOCOL_METHODS = sorted(
    name for name, value in vars(FirewallDriver).items() if inspect.isfunction(value) and not name.startswith("_")
)


def test_select_driver_names_the_two_drivers_and_defaults_to_nft():
    assert type(select_driver()) is NftDriver
    assert type(select_driver("nft")) is NftDriver
    assert type(select_driver("none")) is NoneDriver
    assert [select_driver(name).name for name in firewall.DRIVERS] == ["nft", "none"]


def test_an_unknown_driver_is_one_line_with_the_choices():
    with pytest.raises(ConfigError) as caught:
        select_driver("iptables")
    assert caught.value.msg == "unknown firewall driver 'iptables'"
    assert caught.value.hint == "use one of nft, none"


@pytest.mark.parametrize("driver", [NftDriver, NoneDriver])
def test_every_driver_implements_the_whole_interface_with_its_signatures(driver):
    assert PROTOCOL_METHODS == [
        "delete_leaked",
        "ensure_guard",
        "ensure_network",
        "ensure_ports",
        "network_commands",
        "ports_commands",
        "ports_removal_commands",
        "problems",
        "published_by",
        "release_localnet",
        "removal_commands",
        "remove_network",
        "remove_ports",
        "rules_survey",
        "validate",
    ]
    for name in PROTOCOL_METHODS:
        wanted = inspect.signature(getattr(FirewallDriver, name))
        assert list(inspect.signature(getattr(driver, name)).parameters) == list(wanted.parameters), name


def test_the_nft_driver_refuses_a_host_without_nft_and_none_does_not(monkeypatch):
    monkeypatch.setenv("MINIRUN_NFT", "/nonexistent/nft")
    with pytest.raises(ConfigError) as caught:
        select_driver("nft").validate()
    assert caught.value.msg == "the nft binary is missing; minirun needs it for NAT"
    select_driver("none").validate()


def _ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs the nft binary to read the ruleset")
def test_the_none_driver_writes_and_removes_nothing():
    """Run as root inside the test sandbox's own network namespace: the ruleset the kernel shows is the
    same before and after every call, and published ports are refused rather than silently dropped."""
    network, driver = default_network(), select_driver("none")
    before = _ruleset()
    assert driver.ensure_network(network) == ""
    driver.remove_network(network)
    assert driver.remove_ports("0123456789ab", network) == 0
    assert driver.ensure_guard() is False
    driver.release_localnet(network)
    assert driver.published_by("0123456789ab", "10.77.0.2") == []
    survey = driver.rules_survey([network])
    assert not survey.networks[network.name].masquerade and survey.leaked == [] and not survey.guard
    mappings = (PortMapping("0.0.0.0", 8080, 80),)
    with pytest.raises(ConfigError) as caught:
        driver.ensure_ports(network, "0123456789ab", "10.77.0.2", mappings)
    assert "published ports need firewall rules" in caught.value.msg
    driver.ensure_ports(network, "0123456789ab", "10.77.0.2", ())
    assert driver.problems(network, True, PortRules("0123456789ab", "c", "10.77.0.2", mappings)) == []
    assert _ruleset() == before


def test_the_nft_driver_describes_what_it_applies_byte_for_byte():
    """--explain shows exactly the script ensure_network and ensure_ports apply (goldens in tests/golden)."""
    network, driver = default_network(), select_driver("nft")
    (script,) = driver.network_commands(network, None)
    assert script.startswith("nft -f - <<'EOF'\n") and script.endswith("EOF")
    assert firewall.render_masquerade(network) in script and firewall.render_isolation(network) in script
    assert driver.network_commands(network, "") == [
        "# the NAT and isolation rules for 10.77.0.0/16 are already in place (nft list table inet minirun)"
    ]
    commands = driver.ports_commands(network, "0123456789ab", "10.77.0.2", (PortMapping("127.0.0.1", 8080, 80),))
    assert commands[1] == "sysctl -w net.ipv4.conf.minirun0.route_localnet=1"
    assert (
        'ip daddr 127.0.0.1 tcp dport 8080 dnat ip to 10.77.0.2:80 comment "minirun port owner=0123456789ab"'
        in (commands[0])
    )
