"""Every example (one per exercise of the seed) runs green against the sandbox host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("[0-9][0-9]-*.sh"))
SKIPPED = 77  # the examples' (and automake's) "skipped" status

EXPECTED = {
    "01-two-namespaces.sh": ["minirun-red", "minirun-blue", "0% packet loss"],
    "02-bridge.sh": ["master minirun0", "0% packet loss"],
    "03-mini-container-network.sh": ["you reached me from 198.51.100.1", "demo done."],
    "04-pod-localhost.sh": ["hello over localhost, from the pod mate", "127.0.0.1:8080", "refused at"],
    "05-inspect.sh": ["inet 10.77.", "default via 10.77.0.1", "minirun0 (bridge"],
    "06-compare-docker.sh": [],
    "07-images-and-confinement.sh": [
        "overlay / overlay",
        "10.77.0.99\tdb",
        "NoNewPrivs:\t1",
        "uid=1000",
        "images demo done.",
    ],
}


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=180)
    if result.returncode == SKIPPED:
        pytest.skip(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for fragment in EXPECTED[script.name]:
        assert fragment in result.stdout, (fragment, result.stdout[-3000:])


def test_every_example_is_checked():
    assert sorted(p.name for p in EXAMPLES) == sorted(EXPECTED)
