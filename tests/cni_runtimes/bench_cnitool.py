"""`cnitool add` / `del` latency of minirun-cni next to the reference bridge + host-local plugins.

    .venv/bin/python -m tests.cni_runtimes.bench_cnitool [ROUNDS]

As root. Runs itself in a throwaway network + mount namespace (private /run, /var/lib as an overlay), so
the machine's network, firewall and files are not touched; prints the median and p90 per plugin.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.cni_runtimes import tools
from tests.cni_runtimes.harness import MINIRUN_CNI, PLUGINS, CniTool, Host, Network, private_var_lib


def bench(cnitool: Path, plugin: str, rounds: int, root: Path) -> tuple[list[float], list[float]]:
    host = Host()
    try:
        net = Network(root / plugin, plugin)
        tool = CniTool(cnitool, host, net)
        adds, dels = [], []
        for i in range(rounds + 1):  # round 0 creates the bridge and warms caches: not counted
            ns = f"bench-{uuid.uuid4().hex[:8]}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            path = f"/run/netns/{ns}"
            try:
                start = time.perf_counter()
                json.loads(tool("add", path).stdout)
                added = time.perf_counter()
                tool("del", path)
                deleted = time.perf_counter()
            finally:
                subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
            if i:
                adds.append((added - start) * 1000)
                dels.append((deleted - added) * 1000)
        return adds, dels
    finally:
        host.close()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    cnitool = tools.cnitool()  # built (or taken from the cache) before leaving the machine's namespace
    if os.environ.get("_MINIRUN_BENCH_INSIDE") != "1":
        os.execvp(
            "unshare",
            ["unshare", "--net", "--mount", "--propagation", "private", "env", "_MINIRUN_BENCH_INSIDE=1",
             sys.executable, "-m", "tests.cni_runtimes.bench_cnitool", str(rounds)],
        )  # fmt: skip
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    os.makedirs("/run/netns")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    print(f"cnitool {cnitool}; {rounds} rounds (one warm-up round not counted); wall time in ms")
    with private_var_lib(), tempfile.TemporaryDirectory(prefix="minirun-bench-") as tmp:
        for plugin in PLUGINS:
            if plugin == "minirun-cni" and not os.access(MINIRUN_CNI, os.X_OK):
                print(f"{plugin:12} not installed")
                continue
            adds, dels = bench(cnitool, plugin, rounds, Path(tmp))
            q = lambda xs: statistics.quantiles(xs, n=10)[-1]  # noqa: E731
            print(
                f"{plugin:12} add median {statistics.median(adds):6.1f} p90 {q(adds):6.1f}   "
                f"del median {statistics.median(dels):6.1f} p90 {q(dels):6.1f}"
            )


if __name__ == "__main__":
    main()
