"""`minirun doctor`'s leak check: veths on a network's bridge, address records and rules that nothing owns.

As in reconcile.py: a damaged container record is never evidence that what its id holds is free, and a
damaged pod record hides which veth and address are the pod's, so then none is called leaked (`minirun gc
--damaged` shows and releases them)."""

from __future__ import annotations

import os

from minirun import jsonstore, paths
from minirun.net.attachment import FirewallDriver, Rtnl, address_store, delete_link, host_veth_name
from minirun.net.firewall.facts import LeakedRule
from minirun.net.network import Network
from minirun.net.survey import BridgeSurvey, HostSurvey
from minirun.runtime import store
from minirun.runtime.doctor_finding import Finding, ok


def leak_findings(host: Rtnl, firewall: FirewallDriver, survey: HostSurvey, bridge: BridgeSurvey) -> list[Finding]:
    findings = []
    # Pods as read (all_pods), not pod_ids(), which sets a damaged one aside: doctor only looks.
    owners = store.holder_ids(pods={p["id"] for p in store.all_pods()})
    damaged_pods = _damaged_pod_names()
    if damaged_pods:
        findings.append(_damaged_pods_finding(damaged_pods, bridge.network))
    elif bridge.link is not None:
        findings += _leaked_veths(host, survey, bridge, {host_veth_name(owner) for owner in owners})
    if not damaged_pods:
        findings += _leaked_addresses(bridge.network, owners)
    findings += [_leaked_rule(firewall, rule) for rule in survey.rules.leaked]
    return findings or [ok("no leaked veths, address records or rules")]


def _damaged_pod_names() -> list[str]:
    """Pods whose record cannot be read: set aside by reconcile, or not yet (doctor does not reconcile)."""
    damaged = set(store.damaged_pod_names())
    for name in jsonstore.record_names(paths.pods_dir()):
        try:
            store.load_pod(name)
        except store.DamagedPod:
            damaged.add(name)
    return sorted(damaged)


def _damaged_pods_finding(damaged_pods: list[str], network: Network) -> Finding:
    return Finding(
        False,
        (
            f"the record of pod {damaged_pods[0]} is damaged"
            if len(damaged_pods) == 1
            else f"the records of pods {', '.join(damaged_pods)} are damaged"
        )
        + f": veths and address records on {network.bridge} are not checked for leaks",
        "a damaged record hides which veth and address are the pod's: removing them could cut off a pod "
        "that still runs",
        "minirun gc --damaged   # shows what it may hold; with -f releases it",
    )


def _leaked_veths(host: Rtnl, survey: HostSurvey, bridge: BridgeSurvey, expected: set[str]) -> list[Finding]:
    index, name = bridge.link.index, bridge.network.bridge  # type: ignore[union-attr]
    return [
        Finding(
            False,
            f"leaked veth {link.name} on {name}: no container or pod owns it",
            "it holds a bridge port and, if its peer lives on, a namespace nobody manages",
            f"ip link delete {link.name}",
            lambda veth=link.name: delete_link(host, veth),
        )
        for link in survey.links  # in the kernel's order, as `ip link` lists them
        if link.master == index and link.kind == "veth" and link.name not in expected
    ]


def _leaked_addresses(network: Network, owners: set[str]) -> list[Finding]:
    pool = address_store(paths.ipam_dir(network.name), network)
    return [
        Finding(
            False,
            f"leaked address record {address} (owner {held.owner} is gone)",
            "the address can never be handed out again",
            f"rm {os.path.join(pool.directory, address)}",
            lambda a=address, o=held.owner: pool.release(a, o),
        )
        for address, held in pool.reservations().items()
        if held.owner not in owners
    ]


def _leaked_rule(firewall: FirewallDriver, rule: LeakedRule) -> Finding:
    return Finding(
        False,
        f"leaked rule in {rule.where} for a network that no longer exists ({rule.comment})",
        "it keeps accepting or translating traffic for addresses minirun no longer manages",
        f"nft delete rule {rule.where} handle {rule.handle}",
        lambda: firewall.delete_leaked(rule),
    )
