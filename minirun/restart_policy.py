"""Docker's restart policies (`--restart`), as pure rules: which policy strings are valid, whether an ended
container is started again, and how long the supervisor waits first.

- `no` (the default): never; `always` and `unless-stopped`: whatever the exit code; `on-failure[:N]`: on a
  non-zero exit code, at most N times in a row (no N, or 0: without limit).
- A container stopped by hand (`stop`, `kill` with a fatal signal, `restart`'s stop) is not started again
  until someone starts it: Docker's "the restart policy is disabled until the next time the container is
  started".
- The wait doubles from 100 ms with every restart, up to one minute, and goes back to 100 ms once the
  container ran for 10 s: Docker's back-off.
- `unless-stopped` differs from `always` only when the daemon starts again after a reboot: minirun's state
  root is on tmpfs, so after a reboot there is no container left to restart, and the two are the same.

Docker: https://docs.docker.com/engine/containers/start-containers-automatically/
"""

from __future__ import annotations

from minirun.errors import ConfigError

POLICIES = ("no", "always", "unless-stopped", "on-failure")
FIRST_DELAY = 0.1  # seconds
MAX_DELAY = 60.0
RESET_AFTER = 10.0  # a container that ran this long starts its back-off again from FIRST_DELAY


def validate(text: str) -> str:
    """`text` if it is a policy Docker accepts; ConfigError (exit 125) otherwise."""
    name, sep, count = text.partition(":")
    valid = name in POLICIES and (not sep or (name == "on-failure" and count.isdigit() and len(count) <= 6))
    if not valid:
        raise ConfigError(
            f'invalid restart policy "{text}"', hint="use no, always, unless-stopped, on-failure or on-failure:N"
        )
    return text


def should_restart(policy: str, exit_code: int, restarts_so_far: int, stopped_by_hand: bool) -> bool:
    name, _, count = policy.partition(":")
    if stopped_by_hand or name == "no":
        return False
    if name == "on-failure":
        return exit_code != 0 and (not int(count or 0) or restarts_so_far < int(count))
    return name in ("always", "unless-stopped")


def next_delay(previous: float | None, ran_seconds: float) -> float:
    """The wait before the next restart, given the last one (None: none yet) and how long the run lasted."""
    if previous is None or ran_seconds >= RESET_AFTER:
        return FIRST_DELAY
    return min(previous * 2, MAX_DELAY)
