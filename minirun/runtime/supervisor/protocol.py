"""The supervisor's wire protocol: one JSON line per request, one JSON line per reply.

Requests: {"op": "sync", "env": {...}} (start DNS on every user network),
{"op": "run", "spec": <ContainerSpec as a dict>, "env": {...}} (`minirun run -d`) and
{"op": "start", "id": <container id>, "env": {...}} (`minirun start`: run a created or exited one again).
The supervisor accepts nothing the CLI could not have sent: here the envelope (exact keys, an env of MINIRUN_*
strings, a container id); the spec is checked by the CLI's own parser (cli/run_request.py), which the
supervisor is handed at start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from minirun.errors import ConfigError
from minirun.spec import ContainerSpec

# The variables that change how a container is set up travel with the request: the supervisor was
# started by some earlier command, with that command's environment.
FORWARDED_ENV_PREFIX = "MINIRUN_"
_KEYS = {"run": {"op", "spec", "env"}, "start": {"op", "id", "env"}, "sync": {"op", "env"}}
# The operations that start a container in a worker (the others are answered by the supervisor itself).
CONTAINER_OPS = ("run", "start")
_HINT = "the supervisor takes only what 'minirun run -d' sends; use the minirun CLI"
_HEX = "0123456789abcdef"


def sync_request() -> dict[str, Any]:
    return {"op": "sync", "env": forwarded_env(os.environ)}


def run_request(spec: ContainerSpec) -> dict[str, Any]:
    return {"op": "run", "spec": spec._asdict(), "env": forwarded_env(os.environ)}


def start_request(container_id: str) -> dict[str, Any]:
    return {"op": "start", "id": container_id, "env": forwarded_env(os.environ)}


def forwarded_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode() + b"\n"


def parse_line(line: bytes) -> dict[str, Any]:
    """The request in one line (without its newline): a JSON object with a known op and exactly its keys,
    and an env the CLI could have forwarded. Raises ConfigError. Cheap: runs in the supervisor itself."""
    try:
        payload = json.loads(line, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"request is not JSON: {exc}", hint=_HINT) from None
    if not isinstance(payload, dict):
        raise ConfigError("request is not a JSON object", hint=_HINT)
    op = payload.get("op")
    if not isinstance(op, str) or op not in _KEYS:
        raise ConfigError(f"unknown request {op!r}", hint=_HINT)
    if set(payload) != _KEYS[op]:
        raise ConfigError(f"{op} request: {key_mismatch(set(payload), _KEYS[op], 'keys')}", hint=_HINT)
    _check_env(payload["env"])
    if op == "start":
        container_id = payload["id"]
        if not (isinstance(container_id, str) and len(container_id) == 12 and set(container_id) <= set(_HEX)):
            raise ConfigError("start request: id is not a container id (12 hex digits)", hint=_HINT)
    return payload


def key_mismatch(given: set[str], expected: set[str], what: str) -> str:
    """`unknown keys ['x']; missing keys ['env']`, leaving out an empty side."""
    extra, missing = sorted(given - expected), sorted(expected - given)
    parts = [f"unknown {what} {extra}"] if extra else []
    return "; ".join(parts + ([f"missing {what} {missing}"] if missing else []))


def _check_env(env: Any) -> None:
    """What forwarded_env() can produce: MINIRUN_* names (no '=' or NUL) to strings without NUL."""
    if not isinstance(env, dict):
        raise ConfigError("request: env is not an object", hint=_HINT)
    for key, value in env.items():
        if not key.startswith(FORWARDED_ENV_PREFIX) or "=" in key or "\0" in key:
            raise ConfigError(f"request: env may hold only {FORWARDED_ENV_PREFIX}* variables, not {key!r}", hint=_HINT)
        if not isinstance(value, str) or "\0" in value:
            raise ConfigError(f"request: env {key} is not a string without NUL", hint=_HINT)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
