#!/usr/bin/env python3
"""Benchmark: ADD and DEL latency of `minirun-cni`, exec'd as a runtime does, beside the reference Go plugins
(`bridge` + `host-local` from Debian's containernetworking-plugins, when /usr/lib/cni/bridge exists) with
the same configuration.

Not part of the test run (pytest collects test_*.py only). Run as root:
    .venv/bin/python -m compileall -q minirun && .venv/bin/python tests/bench/bench_cni.py [--runs 20]
Like the tests, it first moves itself into a throwaway network + mount namespace with its own /run, so the
machine's real network and firewall are not touched. Each run: a fresh netns (not timed), ADD (timed), DEL
(timed). One attachment stays on the network throughout ("warm": the bridge and masquerade rule exist, as
on a node with pods), and the first ADD/DEL on an empty network is reported separately ("cold").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from minirun.kernel import syscalls as k  # noqa: E402

PLUGIN = str(Path(sys.executable).parent / "minirun-cni")
REFERENCE_DIR = "/usr/lib/cni"


def sandbox() -> None:
    k.unshare(k.CLONE_NEWNET | k.CLONE_NEWNS)
    k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
    k.mount("tmpfs", "/run", "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=755")
    os.makedirs("/run/netns", exist_ok=True)
    os.environ["MINIRUN_STATE_DIR"] = "/run/minirun"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def conflist(kind: str, data_dir: str, ports: bool) -> dict:
    conf = {
        "cniVersion": "1.0.0",
        "name": f"bench{kind}",
        "type": "minirun-cni" if kind == "minirun" else "bridge",
        "bridge": f"bench{kind[:3]}0",
        "isGateway": True,
        "ipMasq": True,
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir,
            "ranges": [[{"subnet": "10.126.1.0/24" if kind == "minirun" else "10.126.2.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
        },
    }
    if ports:
        conf["runtimeConfig"] = {"portMappings": [{"hostPort": 18100, "containerPort": 80, "protocol": "tcp"}]}
    return conf


def call(binary: str, command: str, conf: dict, netns: str, cid: str, cni_path: str) -> float:
    env = dict(
        os.environ,
        CNI_COMMAND=command,
        CNI_CONTAINERID=cid,
        CNI_NETNS=netns,
        CNI_IFNAME="eth0",
        CNI_ARGS="",
        CNI_PATH=cni_path,
    )
    started = time.perf_counter()
    proc = subprocess.run([binary], input=json.dumps(conf), capture_output=True, text=True, env=env)
    took = (time.perf_counter() - started) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{binary} {command} failed: {proc.stdout} {proc.stderr}")
    return took


def measure(kind: str, binary: str, cni_path: str, runs: int, ports: bool) -> dict[str, float]:
    data_dir = tempfile.mkdtemp(prefix=f"bench-{kind}-", dir="/run")
    conf = conflist(kind, data_dir, ports=False)
    subprocess.run(["ip", "netns", "add", f"{kind}-cold"], check=True)
    cold_add = call(binary, "ADD", conf, f"/run/netns/{kind}-cold", "cold", cni_path)
    cold_del = call(binary, "DEL", conf, f"/run/netns/{kind}-cold", "cold", cni_path)
    subprocess.run(["ip", "netns", "add", f"{kind}-anchor"], check=True)
    call(binary, "ADD", conf, f"/run/netns/{kind}-anchor", "anchor", cni_path)
    conf = conflist(kind, data_dir, ports=ports)
    adds, dels = [], []
    for i in range(runs):
        name = f"{kind}-{i}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        adds.append(call(binary, "ADD", conf, f"/run/netns/{name}", f"run{i}", cni_path))
        dels.append(call(binary, "DEL", conf, f"/run/netns/{name}", f"run{i}", cni_path))
        subprocess.run(["ip", "netns", "delete", name], check=True)
    call(binary, "DEL", conflist(kind, data_dir, ports=False), f"/run/netns/{kind}-anchor", "anchor", cni_path)
    return {
        "cold add": cold_add,
        "cold del": cold_del,
        "add": statistics.median(adds),
        "del": statistics.median(dels),
        "add p90": sorted(adds)[int(len(adds) * 0.9) - 1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--ports", action="store_true", help="every ADD also publishes a port (portMappings)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    sandbox()
    rows = [("minirun-cni", measure("minirun", PLUGIN, "/opt/cni/bin", options.runs, options.ports))]
    if os.access(f"{REFERENCE_DIR}/bridge", os.X_OK) and os.access(f"{REFERENCE_DIR}/host-local", os.X_OK):
        # The reference bridge's ipMasq and portmap need iptables; without ports this is bridge + host-local.
        rows.append(
            (
                "reference bridge+host-local",
                measure("ref", f"{REFERENCE_DIR}/bridge", REFERENCE_DIR, options.runs, False),
            )
        )
    else:
        print(f"(no reference plugins in {REFERENCE_DIR}: apt-get install containernetworking-plugins)")
    print(f"median of {options.runs} runs, ms (warm: another attachment on the network; cold: the first)")
    print(f"{'plugin':32} {'add':>7} {'del':>7} {'add p90':>8} {'cold add':>9} {'cold del':>9}")
    for name, r in rows:
        print(
            f"{name:32} {r['add']:7.1f} {r['del']:7.1f} {r['add p90']:8.1f} {r['cold add']:9.1f} {r['cold del']:9.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
