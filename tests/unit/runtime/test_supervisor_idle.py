"""MINIRUN_SUPERVISOR_IDLE: how long the supervisor stays after its last container and request."""

from __future__ import annotations

import pytest

from minirun.runtime.supervisor import daemon


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(None, daemon.IDLE_SECONDS), ("", daemon.IDLE_SECONDS), ("0", 0.0), ("300", 300.0), ("0.5", 0.5)],
)
def test_the_idle_period_is_read_from_the_environment(monkeypatch, raw, seconds):
    if raw is None:
        monkeypatch.delenv(daemon.IDLE_ENV, raising=False)
    else:
        monkeypatch.setenv(daemon.IDLE_ENV, raw)
    assert daemon._idle_seconds() == seconds


@pytest.mark.parametrize("raw", ["soon", "-1", "inf", "nan"])
def test_a_bad_idle_period_falls_back_to_the_default_and_says_so(monkeypatch, capsys, raw):
    monkeypatch.setenv(daemon.IDLE_ENV, raw)
    assert daemon._idle_seconds() == daemon.IDLE_SECONDS
    assert f"{daemon.IDLE_ENV}={raw!r} is not a number of seconds" in capsys.readouterr().err
