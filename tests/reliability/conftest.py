"""The reliability suite (issue 13): races, faults and kill -9 under load. Root tests in the sandbox, with the
same per-test state root, leak check and shared fixtures as tests/integration (imported from there, so the
two suites check the same things); every test here is marked `reliability` so `-m reliability` runs them
alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import busybox_image, clean_slate, leak_check, state_dir

__all__ = ["busybox_image", "clean_slate", "leak_check", "state_dir"]

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.root)
            item.add_marker(pytest.mark.reliability)
