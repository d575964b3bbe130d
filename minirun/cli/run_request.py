"""The spec in a `run -d` request, checked exactly as `minirun run` checks its arguments (issue 12, hole 3).

The supervisor runs it on every "run" request (its entry point, cli/supervise.py, hands it over: the
runtime layer does not import the CLI's). Exact fields and JSON types first; then the spec is written out
as `minirun run` arguments and parsed by run_args, which must give it back unchanged, so every check of
run_args and spec.py applies (names, ports, pods, flag conflicts, normalized addresses); then the
--cap-add/--cap-drop/--security-opt checks a foreground run makes when it plans.
"""

from __future__ import annotations

from typing import Any

from minirun.runtime import upgrade_guard  # noqa: F401 - first: a supervisor's upgrade (see there)

# isort: split
from minirun.cli import run_args
from minirun.errors import ConfigError
from minirun.runtime.supervisor.protocol import key_mismatch
from minirun.spec import ContainerSpec

_HINT = "the supervisor takes only what 'minirun run -d' sends; use the minirun CLI"


def decode_spec(raw: Any) -> ContainerSpec:
    """The ContainerSpec of a "run" request's spec, validated as `minirun run -d` validates its arguments.
    Raises ConfigError naming the first field at fault."""
    if not isinstance(raw, dict):
        raise ConfigError("run request: spec is not an object", hint=_HINT)
    if set(raw) != set(ContainerSpec._fields):
        mismatch = key_mismatch(set(raw), set(ContainerSpec._fields), "spec fields")
        raise ConfigError(f"run request: {mismatch}", hint=_HINT)
    spec = ContainerSpec(**{field: _typed(field, raw[field]) for field in ContainerSpec._fields})
    if not spec.detach or spec.dry_run:
        raise ConfigError("run request: only a detached run (detach, not dry_run) is served", hint=_HINT)
    reparsed = run_args.parse(as_arguments(spec), host_env={})
    if reparsed != spec:
        differing = next(f for f in ContainerSpec._fields if getattr(reparsed, f) != getattr(spec, f))
        raise ConfigError(f"run request: spec field {differing!r} is not what the CLI makes of it", hint=_HINT)
    from minirun.security import profile_from_options

    profile_from_options(spec.cap_add, spec.cap_drop, spec.privileged, spec.security_opts)
    return spec


def as_arguments(spec: ContainerSpec) -> list[str]:
    """`minirun run` arguments that give `spec` (long options, `--opt=value`, then `-- CMD ARGS`)."""
    args = []
    for option in run_args.OPTIONS:
        field = spec_field(option.dest)
        if field is None:
            continue
        value = getattr(spec, field)
        flag = next(f for f in option.flags if f.startswith("--"))
        if option.metavar is None:
            args += [flag] if value else []
        elif option.repeat:
            args += [f"{flag}={_item_argument(field, item)}" for item in value]
        elif value != ContainerSpec._field_defaults.get(field):
            args.append(f"{flag}={value}")
    return [*args, "--", *spec.command]


def spec_field(option_dest: str) -> str | None:
    """The ContainerSpec field a run option fills: its dest, or the plural of it (--add-host: add_hosts)."""
    renamed = {"publish": "ports", "log_opt": "log_options"}
    if option_dest in renamed:
        return renamed[option_dest]
    for name in (option_dest, f"{option_dest}s"):
        if name in ContainerSpec._fields:
            return name
    return None  # --help


def _item_argument(field: str, item: Any) -> str:
    if field == "ports":
        host_ip, host_port, container_port, proto = item
        return f"{host_ip}:{host_port}:{container_port}/{proto}"
    if isinstance(item, tuple):  # -e KEY=VALUE, --add-host NAME=IP
        return "=".join(item)
    return str(item)


def _typed(field: str, value: Any) -> Any:
    """`value` as the field's Python type, if it has exactly the JSON type the CLI sends for it."""
    kind = _annotation(field)
    if field == "ports":
        return tuple(_port(item) for item in _list(field, value))
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int | None" and (value is None or (isinstance(value, int) and not isinstance(value, bool))):
        return value
    if kind in ("str", "str | None") and (isinstance(value, str) or (value is None and kind == "str | None")):
        return _text(field, value)
    if kind == "tuple[str, ...]":
        return tuple(_text(field, item) for item in _list(field, value))
    if kind == "tuple[tuple[str, str], ...]":
        pairs = _list(field, value)
        if all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
            return tuple((_text(field, a), _text(field, b)) for a, b in pairs)
    raise ConfigError(f"run request: spec field {field!r} is not a {kind}", hint=_HINT)


def _annotation(field: str) -> str:
    """The field's annotation as written in spec.py (NamedTuple keeps it as a ForwardRef)."""
    annotation = ContainerSpec.__annotations__[field]
    return getattr(annotation, "__forward_arg__", str(annotation))


def _list(field: str, value: Any) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"run request: spec field {field!r} is not a list", hint=_HINT)
    return value


def _text(field: str, value: Any) -> Any:
    """A string from a command line: never contains NUL (execve could not have passed it)."""
    if value is not None and (not isinstance(value, str) or "\0" in value):
        raise ConfigError(f"run request: spec field {field!r} holds a non-string or a NUL byte", hint=_HINT)
    return value


def _port(item: Any) -> tuple:
    from minirun.net.ports import PortMapping

    shape = (str, int, int, str)
    if not (isinstance(item, list) and len(item) == 4 and all(type(v) is t for v, t in zip(item, shape, strict=True))):
        raise ConfigError("run request: spec field 'ports' holds a malformed mapping", hint=_HINT)
    return PortMapping(*item)
