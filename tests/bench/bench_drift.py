#!/usr/bin/env python3
"""Benchmark: do 1000 sequential runs stay as fast at the end as at the start, and leave nothing? (issue 15)

Not part of the test run. As root:  .venv/bin/python tests/bench/bench_drift.py [--runs 1000] [--detached]
It moves itself into a throwaway network + mount namespace (as the tests do) with its own state and data
roots, times each `minirun run --rm true` (or, with --detached, each `run -d --rm true` start), and prints
the medians of the first and the last 100 and their ratio (target: <= 1.2x), then what is left: records,
address reservations, name claims, host veths, owner-registry entries, netns pins, mounts, processes, and
the supervisor's open descriptors when one runs.
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

MINIRUN = str(Path(sys.executable).parent / "minirun")
STATE = "/run/minirun-drift"
DATA = "/run/minirun-drift-data"


def listing(path: str, keep=lambda name: not name.startswith(".")) -> list[str]:
    try:
        return sorted(name for name in os.listdir(path) if keep(name))
    except FileNotFoundError:
        return []


def leftovers() -> dict[str, object]:
    links = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True).stdout
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f if STATE in line or "/run/netns/minirun-" in line]
    ipam = Path(STATE) / "ipam"
    reservations = [str(p) for p in ipam.glob("*/*") if p.name[0].isdigit()] if ipam.is_dir() else []
    return {
        "records": listing(f"{STATE}/containers"),
        "addresses": reservations,
        "names": listing(f"{STATE}/names"),
        "veths": links.splitlines(),
        "owners": listing(f"{STATE}/owners"),
        "netns": [n for n in listing("/run/netns") if n.startswith("minirun-")],
        "mounts": mounts,
    }


def supervisor_fds() -> int | None:
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"minirun.cli.supervise" not in f.read():
                    continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if f"MINIRUN_STATE_DIR={STATE}".encode() not in f.read().split(b"\0"):
                    continue
            return len(os.listdir(f"/proc/{entry}/fd"))
        except OSError:
            continue
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--detached", action="store_true", help="time `run -d --rm true` starts instead")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_drift.py: run as root")
    k.unshare(k.CLONE_NEWNET | k.CLONE_NEWNS)
    k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
    k.mount("tmpfs", "/run", "tmpfs", 0, "mode=755")
    os.makedirs("/run/netns")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ.update(MINIRUN_STATE_DIR=STATE, MINIRUN_DATA_DIR=DATA, MINIRUN_DNS_FORWARD="0")
    command = [MINIRUN, "run", *(["-d"] if args.detached else []), "--rm", "true"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # the bridge and the table exist
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - started) * 1000)
    window = min(100, len(times) // 2)
    first, last = statistics.median(times[:window]), statistics.median(times[-window:])
    print(f"{' '.join(command[1:])}: {args.runs} runs")
    print(f"first {window}: median {first:.1f} ms; last {window}: median {last:.1f} ms; last/first {last / first:.2f}x")
    fds = supervisor_fds()
    if fds is not None:
        print(f"supervisor open descriptors: {fds}")
    deadline = time.monotonic() + 10  # detached --rm containers end and are torn down by the supervisor
    left = leftovers()
    while any(left[key] for key in ("records", "addresses", "names", "veths")) and time.monotonic() < deadline:
        time.sleep(0.1)
        left = leftovers()
    for key, value in left.items():
        print(f"left: {key}: {value if value else 'nothing'}")


if __name__ == "__main__":
    main()
