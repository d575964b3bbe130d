"""`minirun run` arguments, parsed the way `docker run` parses them: options first, then CMD [ARGS...].

Kept free of typer so the hot path (`minirun run`) starts fast; the typer app hands `run` its raw
arguments and this is the only parser for them.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from minirun.errors import ConfigError
from minirun.spec import (
    NETWORK_MODES,
    ContainerSpec,
    parse_env,
    validate_hostname,
    validate_mtu,
    validate_name,
    validate_network,
)


class Option(NamedTuple):
    flags: tuple[str, ...]
    dest: str
    metavar: str | None  # None: a boolean flag
    help: str
    repeat: bool = False


OPTIONS = (
    Option(("--name",), "name", "NAME", "name the container (unique; default: generated)"),
    Option(("--hostname",), "hostname", "NAME", "hostname inside the container (default: the container id)"),
    Option(
        ("-e", "--env"), "env", "KEY=VALUE", "set an environment variable (repeatable; -e KEY copies it)", repeat=True
    ),
    Option(("-w", "--workdir"), "workdir", "DIR", "working directory of the command"),
    Option(("--network",), "network", "MODE", f"{'|'.join(NETWORK_MODES)} (default: bridge, on minirun0)"),
    Option(("--mtu",), "mtu", "BYTES", "MTU of eth0 and its host-side veth (default: 1500)"),
    Option(("--rm",), "remove", None, "remove the container when it exits (always so in the foreground)"),
    Option(("--timings",), "timings", None, "print how long each setup step took, on stderr"),
    Option(("--debug",), "debug", None, "show a traceback when minirun itself fails"),
    Option(("-h", "--help"), "help", None, "show this help"),
)
_BY_FLAG = {flag: option for option in OPTIONS for flag in option.flags}

USAGE = "Usage: minirun run [OPTIONS] CMD [ARGS...]"
SUMMARY = "Run CMD in new net, uts, ipc, pid and mount namespaces, on the minirun0 bridge (like docker run)."


def help_text() -> str:
    lines = [USAGE, "", SUMMARY, "", "Options:"]
    for option in OPTIONS:
        flags = ", ".join(option.flags) + (f" {option.metavar}" if option.metavar else "")
        lines.append(f"  {flags:<24} {option.help}")
    lines += [
        "",
        "Exit status: the command's own; 125 minirun failed, 126 not executable, 127 not found,",
        "128+N killed by signal N.",
    ]
    return "\n".join(lines)


class HelpRequested(Exception):
    pass


def parse(args: list[str], host_env: dict[str, str] | None = None) -> ContainerSpec:
    """Parse `minirun run` arguments into a validated ContainerSpec; raise ConfigError or HelpRequested."""
    host_env = dict(os.environ) if host_env is None else host_env
    values: dict[str, object] = {"env": []}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        flag, eq, inline = arg.partition("=") if arg.startswith("--") else (arg[:2], "", arg[2:])
        option = _BY_FLAG.get(flag)
        if option is None:
            raise ConfigError(f"unknown flag: {flag}", hint="see 'minirun run --help'")
        if option.metavar is None:
            if eq or inline:
                raise ConfigError(f"flag {flag} takes no value", hint="see 'minirun run --help'")
            values[option.dest] = True
            i += 1
            continue
        if eq or inline:
            value = inline
            i += 1
        elif i + 1 < len(args):
            value = args[i + 1]
            i += 2
        else:
            raise ConfigError(f"flag {flag} needs a value ({option.metavar})", hint="see 'minirun run --help'")
        if option.repeat:
            values[option.dest].append(value)
        else:
            values[option.dest] = value
    if values.get("help"):
        raise HelpRequested()
    command = tuple(args[i:])
    if not command:
        raise ConfigError("no command given", hint="usage: minirun run [OPTIONS] CMD [ARGS...]")
    return _to_spec(values, command, host_env)


def _to_spec(values: dict, command: tuple[str, ...], host_env: dict[str, str]) -> ContainerSpec:
    mtu = values.get("mtu")
    if mtu is not None:
        try:
            mtu = int(mtu)
        except ValueError:
            raise ConfigError(f'invalid --mtu "{mtu}"', hint="give a number of bytes, e.g. --mtu 1400") from None
    env = tuple(pair for item in values["env"] if (pair := parse_env(item, host_env)) is not None)
    name = values.get("name")
    hostname = values.get("hostname")
    network = validate_network(values.get("network", "bridge"))
    if mtu is not None and network != "bridge":
        raise ConfigError(f"--mtu has no effect with --network {network}", hint="drop --mtu or use --network bridge")
    return ContainerSpec(
        command=command,
        name=validate_name(name) if name is not None else None,
        hostname=validate_hostname(hostname) if hostname is not None else None,
        env=env,
        workdir=values.get("workdir"),
        network=network,
        mtu=validate_mtu(mtu),
        remove=bool(values.get("remove")),
        timings=bool(values.get("timings")),
        debug=bool(values.get("debug")),
    )
