"""The supervisor's side of restart policies (minirun/restart_policy.py): once the teardown of an ended
container is done (its record says exited, its address is free), decide whether it starts again and when,
and keep the due times so the serve loop wakes for them. The restart itself is a worker's (jobs.serve_restart),
which checks again under the start lock: a `stop`, `start` or `rm` in the meantime wins.
"""

from __future__ import annotations

import datetime
import os
import time

from minirun import paths, restart_policy
from minirun.runtime import model, store


def _ran_seconds(record: dict) -> float:
    try:
        started = datetime.datetime.fromisoformat(record["started"].replace("Z", "+00:00"))
        finished = datetime.datetime.fromisoformat(record["finished"].replace("Z", "+00:00"))
    except (KeyError, AttributeError, ValueError):
        return 0.0
    return (finished - started).total_seconds()


class Restarts:
    def __init__(self) -> None:
        self.due: dict[str, float] = {}  # container id -> when (time.monotonic()) to start it again
        self.delays: dict[str, float] = {}  # container id -> the wait before its last restart

    def __bool__(self) -> bool:
        return bool(self.due)

    def consider(self, container_id: str) -> float | None:
        """After the teardown of `container_id`: schedule its restart if its policy says so; the wait."""
        record = store.load(container_id)
        if record is None or record.get("corrupt") or not model.is_exited(record):
            self.delays.pop(container_id, None)  # removed (--rm, rm), or taken over
            return None
        policy = (record.get("spec") or {}).get("restart", "no")
        by_hand = os.path.exists(paths.stopped_by_hand_mark(container_id))
        code = record.get("exit_code", model.EXIT_STATUS_LOST)
        if not restart_policy.should_restart(policy, code, record.get("restart_count", 0), by_hand):
            self.delays.pop(container_id, None)
            return None
        delay = restart_policy.next_delay(self.delays.get(container_id), _ran_seconds(record))
        self.delays[container_id] = delay
        self.due[container_id] = time.monotonic() + delay
        return delay

    def take_due(self) -> list[str]:
        now = time.monotonic()
        ready = [container_id for container_id, when in self.due.items() if when <= now]
        for container_id in ready:
            del self.due[container_id]
        return ready

    def seconds_to_next(self) -> float | None:
        return max(0.0, min(self.due.values()) - time.monotonic()) if self.due else None
