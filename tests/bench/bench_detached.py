#!/usr/bin/env python3
"""Benchmark: memory overhead per detached container (PSS), minirun's supervisor vs Docker's shims.

Not part of the test run. As root:  .venv/bin/python tests/bench/bench_detached.py [--containers 50]
It moves itself into a throwaway network + mount namespace (as the tests do), starts N detached `sleep`
containers, and sums the PSS of every minirun process that is not a container: that is the overhead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from minirun.kernel import syscalls as k  # noqa: E402

MINIRUN = str(Path(sys.executable).parent / "minirun")


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def processes_matching(fragment: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if fragment.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def docker_shims(count: int) -> str | None:
    if not shutil.which("docker") or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return None
    ids = [
        subprocess.run(
            ["docker", "run", "-d", "busybox", "sleep", "300"], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(count)
    ]
    time.sleep(1)
    shims = processes_matching("containerd-shim")
    total = sum(pss_kib(pid) for pid in shims)
    subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    return (
        f"docker: {len(shims)} shim processes, {total / 1024:.1f} MiB PSS, {total / count / 1024:.2f} MiB per container"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--containers", type=int, default=50)
    args = parser.parse_args()
    docker = docker_shims(args.containers)

    k.unshare(k.CLONE_NEWNET | k.CLONE_NEWNS)
    k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
    k.mount("tmpfs", "/run", "tmpfs", 0, "mode=755")
    # Containers' directories and logs go to the data root: the sandbox's tmpfs, not /var/lib/minirun.
    os.environ["MINIRUN_DATA_DIR"] = "/run/minirun-bench-data"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    started = time.perf_counter()
    ids = [
        subprocess.run(
            [MINIRUN, "run", "-d", "sleep", "300"], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(args.containers)
    ]
    elapsed = time.perf_counter() - started
    time.sleep(1)
    supervisors = processes_matching("minirun.cli.supervise")
    total = sum(pss_kib(pid) for pid in supervisors)
    print(
        f"minirun: {args.containers} detached containers started in {elapsed:.2f} s "
        f"({elapsed / args.containers * 1000:.0f} ms each, `run -d` end to end)"
    )
    print(
        f"minirun: {len(supervisors)} supervisor process(es), {total / 1024:.1f} MiB PSS in all, "
        f"{total / args.containers / 1024:.2f} MiB per container (target <= 2 MiB)"
    )
    print(docker or "docker: not installed or not running here, no comparison")
    subprocess.run([MINIRUN, "rm", "-f", *ids], capture_output=True, check=True)


if __name__ == "__main__":
    main()
