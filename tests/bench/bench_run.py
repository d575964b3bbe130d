#!/usr/bin/env python3
"""Benchmark: `minirun run --rm true` end to end, beside the seed's steps as a bash script and Docker.

Not part of the test run (pytest collects test_*.py only). Run as root:
    .venv/bin/python tests/bench/bench_run.py [--runs 30]
Like the tests, it first moves itself into a throwaway network + mount namespace, so the machine's real
network is not touched; Docker, when it is installed and running, is measured before that, on the host.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from minirun.kernel import syscalls as k  # noqa: E402

MINIRUN = str(Path(sys.executable).parent / "minirun")

# The seed's "Building a Mini Container Network", one container, with nft instead of iptables, cleaned up.
SEED_SCRIPT = r"""
set -e
ip link add cni0 type bridge 2>/dev/null || true
ip link set cni0 up
ip addr add 10.244.0.1/24 dev cni0 2>/dev/null || true
ip netns add container1
ip link add veth0 type veth peer name eth0
ip link set eth0 netns container1
ip link set veth0 master cni0
ip link set veth0 up
ip netns exec container1 ip addr add 10.244.0.2/24 dev eth0
ip netns exec container1 ip link set eth0 up
ip netns exec container1 ip link set lo up
ip netns exec container1 ip route add default via 10.244.0.1
sysctl -qw net.ipv4.ip_forward=1
nft add table ip seed
nft 'add chain ip seed post { type nat hook postrouting priority srcnat; }'
nft add rule ip seed post ip saddr 10.244.0.0/24 oifname != cni0 masquerade
ip netns exec container1 true
ip netns delete container1
nft delete table ip seed
"""


def measure(cmd: list[str], runs: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - start) * 1000)
    return times


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def in_process_setup(runs: int) -> float:
    """Median of the launcher's own 'fork-to-exec' timing (fork, unshare, network plan, exec)."""
    values = []
    for _ in range(runs):
        err = subprocess.run([MINIRUN, "run", "--timings", "true"], capture_output=True, text=True).stderr
        for line in err.splitlines():
            if "fork-to-exec" in line:
                values.append(float(line.split()[-2]))
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_run.py: run as root")

    results: dict[str, list[float]] = {}
    if docker_available():
        subprocess.run(["docker", "pull", "-q", "busybox"], capture_output=True)
        results["docker run --rm busybox true"] = measure(["docker", "run", "--rm", "busybox", "true"], args.runs)
        infra = subprocess.run(
            ["docker", "run", "-d", "busybox", "sleep", "600"], capture_output=True, text=True, check=True
        ).stdout.strip()
        results["docker run --rm --network container:X"] = measure(
            ["docker", "run", "--rm", "--network", f"container:{infra}", "busybox", "true"], args.runs
        )
        subprocess.run(["docker", "rm", "-f", infra], capture_output=True)

    k.unshare(k.CLONE_NEWNET | k.CLONE_NEWNS)
    k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
    k.mount("tmpfs", "/run", "tmpfs", 0, "mode=755")
    os.makedirs("/run/netns")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    results["seed script (ip + nft, bash)"] = measure(["bash", "-c", SEED_SCRIPT], args.runs)
    results["minirun run --rm true"] = measure([MINIRUN, "run", "--rm", "true"], args.runs)
    os.environ["MINIRUN_DATA_DIR"] = "/run/minirun-bench-data"  # the sandbox's tmpfs, not /var/lib/minirun
    subprocess.run([MINIRUN, "image", "build", "busybox"], check=True, stdout=subprocess.DEVNULL)
    results["minirun run --rm --image busybox true"] = measure(
        [MINIRUN, "run", "--rm", "--image", "busybox", "true"], args.runs
    )
    results["minirun run --rm --privileged true"] = measure([MINIRUN, "run", "--rm", "--privileged", "true"], args.runs)
    results["minirun run --network none true"] = measure([MINIRUN, "run", "--network", "none", "true"], args.runs)
    subprocess.run([MINIRUN, "pod", "create", "bench"], check=True, stdout=subprocess.DEVNULL)
    results["minirun run --rm --pod bench true"] = measure(
        [MINIRUN, "run", "--rm", "--pod", "bench", "true"], args.runs
    )
    subprocess.run([MINIRUN, "pod", "rm", "bench"], check=True, stdout=subprocess.DEVNULL)
    results["minirun run -d sleep (start only)"] = measure([MINIRUN, "run", "-d", "--rm", "sleep", "0.5"], args.runs)
    detached = [
        subprocess.run([MINIRUN, "run", "-d", "--name", f"idle{i}", "sleep", "600"], check=True, capture_output=True)
        for i in range(10)
    ]
    results["minirun ps (10 containers)"] = measure([MINIRUN, "ps"], args.runs)
    results["minirun inspect (10 containers)"] = measure([MINIRUN, "inspect", "idle3"], args.runs)
    results["minirun logs (10 containers)"] = measure([MINIRUN, "logs", "idle3"], args.runs)
    subprocess.run([MINIRUN, "rm", "-f", *(f"idle{i}" for i in range(len(detached)))], check=True, capture_output=True)
    results["minirun --help"] = measure([MINIRUN, "--help"], args.runs)
    results["minirun run --help"] = measure([MINIRUN, "run", "--help"], args.runs)

    base = statistics.median(results["minirun run --rm true"])
    seed = statistics.median(results["seed script (ip + nft, bash)"])
    print(f"{'command':<40} {'median':>9} {'min':>9}  {'/ run':>6} {'/ seed':>6}")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"{name:<40} {median:7.1f}ms {min(times):7.1f}ms  {median / base:5.2f}x {median / seed:5.2f}x")
    print(f"in-process setup (fork to exec, median): {in_process_setup(args.runs):.2f} ms")
    print(f"({args.runs} runs each after a warm-up, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
