#!/usr/bin/env python3
"""Benchmark: does `minirun run --rm true` stay as fast with many containers up as with none? (issue 13)

Not part of the test run. As root:  .venv/bin/python tests/bench/bench_scale.py [--levels 0,200,1000] [--runs 10]
It moves itself into a throwaway network + mount namespace (as the tests do), and for each level starts
detached `sleep` containers until that many run, then times `run --rm true` (median of --runs) and prints
the ratio to the first level, measured in this one run, beside the same for the seed's bare `ip` script
(what the kernel itself pays for one more container when many are up). Target: <= 1.1x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from minirun.kernel import syscalls as k  # noqa: E402
from tests.bench.bench_run import SEED_SCRIPT  # noqa: E402

MINIRUN = str(Path(sys.executable).parent / "minirun")


def median_ms(command: list[str], runs: int) -> float:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # warm: page cache, the network exists
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="0,200,1000", help="numbers of detached containers, ascending")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]

    k.unshare(k.CLONE_NEWNET | k.CLONE_NEWNS)
    k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
    k.mount("tmpfs", "/run", "tmpfs", 0, "mode=755")
    os.makedirs("/run/netns")
    os.environ["MINIRUN_DATA_DIR"] = "/run/minirun-bench-data"  # the sandbox's tmpfs, not /var/lib/minirun
    os.environ["MINIRUN_DNS_FORWARD"] = "0"  # never ask the machine's (off-box) resolver
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    ids: list[str] = []
    baseline: tuple[float, float] | None = None
    try:
        for level in levels:
            while len(ids) < level:
                started = subprocess.run(
                    [MINIRUN, "run", "-d", "sleep", "3600"], capture_output=True, text=True, check=True
                )
                ids.append(started.stdout.strip())
            ms = median_ms([MINIRUN, "run", "--rm", "true"], args.runs)
            seed = median_ms(["sh", "-c", SEED_SCRIPT], args.runs)
            baseline = baseline or (ms, seed)
            print(
                f"{level:5d} containers up: run --rm true {ms:6.1f} ms ({ms / baseline[0]:.2f}x), "
                f"the seed's ip script {seed:6.1f} ms ({seed / baseline[1]:.2f}x); medians of {args.runs}"
            )
    finally:
        for chunk in range(0, len(ids), 100):
            subprocess.run([MINIRUN, "rm", "-f", *ids[chunk : chunk + 100]], capture_output=True)


if __name__ == "__main__":
    main()
