"""Docker's restart policies as rules (minirun/restart_policy.py); the supervisor carrying them out is
tests/integration/test_restart_policy.py."""

from __future__ import annotations

import pytest

from minirun import restart_policy
from minirun.cli import run_args
from minirun.errors import ConfigError


@pytest.mark.parametrize("text", ["no", "always", "unless-stopped", "on-failure", "on-failure:0", "on-failure:5"])
def test_docker_policies_are_accepted(text: str):
    assert restart_policy.validate(text) == text
    assert run_args.parse(["-d", "--restart", text, "true"], host_env={}).restart == text


@pytest.mark.parametrize("text", ["", "yes", "always:3", "on-failure:", "on-failure:-1", "on-failure:x", "No"])
def test_anything_else_is_one_clear_error(text: str):
    with pytest.raises(ConfigError, match="invalid restart policy"):
        run_args.parse(["-d", "--restart", text, "true"], host_env={})


def test_restart_conflicts_with_rm_but_no_is_fine():
    with pytest.raises(ConfigError, match="--restart and --rm conflict"):
        run_args.parse(["-d", "--rm", "--restart", "always", "true"], host_env={})
    assert run_args.parse(["-d", "--rm", "--restart", "no", "true"], host_env={}).remove


@pytest.mark.parametrize(
    ("policy", "exit_code", "so_far", "by_hand", "expected"),
    [
        ("no", 1, 0, False, False),
        ("always", 0, 0, False, True),
        ("always", 137, 50, False, True),
        ("unless-stopped", 0, 0, False, True),
        ("always", 1, 0, True, False),  # stopped by hand: not until started again
        ("unless-stopped", 1, 0, True, False),
        ("on-failure", 0, 0, False, False),
        ("on-failure", 1, 1000, False, True),  # no count: without limit
        ("on-failure:0", 1, 1000, False, True),
        ("on-failure:3", 1, 2, False, True),
        ("on-failure:3", 1, 3, False, False),
        ("on-failure:3", 1, 0, True, False),
    ],
)
def test_whether_an_ended_container_starts_again(policy, exit_code, so_far, by_hand, expected):
    assert restart_policy.should_restart(policy, exit_code, so_far, by_hand) is expected


def test_the_back_off_doubles_to_a_minute_and_resets_after_ten_seconds_of_running():
    delays, delay = [], None
    for _ in range(12):
        delay = restart_policy.next_delay(delay, ran_seconds=0.5)
        delays.append(delay)
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8] and delays[-1] == 60.0 and max(delays) == 60.0
    assert restart_policy.next_delay(60.0, ran_seconds=10.0) == 0.1
