"""Containers on record without a process, as Docker's `create`, `start` and `restart` have them.

`minirun create` validates a `run -d` and writes the container's record (status created) and name claim,
nothing else: no directory, address or process yet. `minirun start` asks the supervisor to run a created or
exited container again: a worker takes the record under a lock (two starts must not both run it), checks
the spec kept in it exactly as a `run -d` request is checked, and runs it with the same id, name, directory
(so what it wrote stays, as Docker keeps a container's writable layer) and log (appended to).

Docker: https://docs.docker.com/reference/cli/docker/container/create/ and .../container/start/
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from minirun import filelock, jsonstore, paths
from minirun.errors import Conflict, MinirunError, NotFound
from minirun.runtime import model, names, reconcile, store
from minirun.runtime.container import config
from minirun.runtime.container.create import new_record
from minirun.runtime.model import ContainerStatus
from minirun.runtime.privileges import require_root
from minirun.spec import ContainerSpec


def create(spec: ContainerSpec) -> str:
    """`minirun create`: the container on record, not started; its id."""
    require_root()
    reconcile.reconcile()
    spec = spec._replace(detach=True)  # what `start` runs is a `run -d` of this spec
    _check_network(spec)
    container_id = model.new_container_id()
    name = spec.name or names.generate(container_id)
    hostname = spec.hostname or container_id
    view = config.plan(spec, spec.command, container_id, hostname, pod=None, resolver=None)
    log = paths.container_log(container_id)
    record = new_record(spec, view, container_id, name, hostname, None, True, log)
    record.update(status=ContainerStatus.CREATED, owner=None)  # no process yet: nobody owns it
    if spec.pod is not None:  # the pod may not exist yet: its first start makes it
        record.update(network_mode="pod", pod=spec.pod)
    # The record before the name claim, as a run writes them: reconcile never takes the claim for an orphan.
    store.save(record)
    try:
        store.claim_name(name, container_id)
    except BaseException:
        store.remove(record)
        raise
    return container_id


def _check_network(spec: ContainerSpec) -> None:
    """A named network must exist now, as Docker's create checks (a pod may be made by the first start)."""
    if spec.pod is None and spec.network not in ("none", "host"):
        from minirun.net import network as netdefs

        netdefs.resolve(spec.network)


def start(record: dict[str, Any]) -> None:
    """`minirun start`: run a created or exited container again, through the supervisor. Starting a running
    one is not an error (Docker's)."""
    require_root()
    jsonstore.remove_file(paths.stopped_by_hand_mark(record["id"]))  # its restart policy applies again
    if model.is_running(record):
        return
    from minirun.runtime.supervisor import client, protocol

    response = client.request(protocol.start_request(record["id"]))
    if not response.get("ok"):
        raise MinirunError(
            response.get("error", "unknown error"), hint=response.get("hint"), code=response.get("code", 1)
        )


def restart(record: dict[str, Any], timeout: float) -> None:
    """`minirun restart`: stop (SIGTERM, `timeout`, SIGKILL) if running, then start again."""
    from minirun.runtime.container import control

    control.stop(record, timeout)
    stopped = store.load(record["id"])
    if stopped is None:
        raise NotFound(f"container {record.get('name') or record['id']} was removed when it stopped (--rm)")
    start(stopped)


def start_in_worker(
    container_id: str,
    decode_spec: Callable[[Any], ContainerSpec],
    supervisor: dict[str, Any],
    log_channel: socket.socket,
    by_policy: bool = False,
) -> str | None:
    """In a supervisor worker: the "start" request of `container_id`, or (`by_policy`) the supervisor's own
    restart of it under its restart policy; its id, None when that restart no longer applies."""
    with filelock.exclusive(paths.start_lock()):
        record = store.load(container_id)
        if record is None and by_policy:
            return None  # removed while it waited for its restart
        if record is None:
            raise NotFound(f"no such container: {container_id}")
        if record.get("corrupt"):
            raise MinirunError(f"the record of container {container_id} is damaged", hint="see 'minirun gc --damaged'")
        label = record.get("name") or container_id
        if by_policy and (os.path.exists(paths.stopped_by_hand_mark(container_id)) or not model.is_exited(record)):
            return None  # stopped by hand, or started by hand, while it waited for its restart
        if model.is_running(record):
            return container_id
        if not model.is_at_rest(record):
            raise Conflict(f"container {label} is starting or stopping", hint="wait for it, then start it again")
        if not isinstance(record.get("spec"), dict):
            raise MinirunError(
                f"container {label} ran in the foreground (or under an older minirun): it cannot be started again",
                hint="run a new container",
                code=1,
            )
        spec = decode_spec(record["spec"])
        from minirun.runtime.container import run

        restarts = record.get("restart_count", 0) + 1 if by_policy else 0  # Docker's RestartCount
        return run.run_detached(spec, supervisor, log_channel, previous=record, restart_count=restarts)
