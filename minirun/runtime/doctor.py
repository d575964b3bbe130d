"""`minirun doctor`: the seed's "Common Mistakes" table, checked against the live host and one container or
pod. Every finding says what is wrong, why it matters and the command that fixes it; --fix applies the
fixes that are minirun's own business (its bridge, its rules, its containers' links), never a foreign
tool's settings.

The host is read once (net.survey.survey: links, rules, sysctls); each network's side is doctor_host.py
(with doctor_leaks.py), the host-wide 127/8 guard too; a container or pod is doctor_target.py."""

from __future__ import annotations

from minirun.net.attachment import open_host, select_driver
from minirun.net.network import Network, all_networks, default_network, resolve
from minirun.net.survey import survey
from minirun.runtime import query, store
from minirun.runtime.doctor_finding import Finding
from minirun.runtime.doctor_host import check_host, check_localnet
from minirun.runtime.doctor_target import check_target

__all__ = ["Finding", "diagnose", "repair"]


def diagnose(ref: str | None) -> list[Finding]:
    host = open_host()  # stays open: the repairs use it
    firewall = select_driver()
    seen = survey(host, all_networks(), firewall)
    default, *others = seen.bridges
    findings = check_host(host, firewall, seen, default)
    for bridge in others:
        findings += [f for f in check_host(host, firewall, seen, bridge) if not f.note]
    findings += check_localnet(firewall, seen)
    if ref is not None:
        findings += check_target(ref, host, firewall, _network_of(ref))
    return findings


def _network_of(ref: str) -> Network:
    owner = store.load_pod(ref)
    if owner is None:
        record = query.find(ref)
        owner = store.load_pod(record["pod"]) if record.get("pod") else record
    name = ((owner or {}).get("network") or {}).get("name")
    return resolve(name) if name else default_network()


def repair(findings: list[Finding]) -> list[str]:
    done = []
    for finding in findings:
        if not finding.ok and finding.repair is not None:
            finding.repair()
            done.append(finding.what)
    return done
