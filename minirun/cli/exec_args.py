"""`minirun exec` arguments, Docker-style: [OPTIONS] CONTAINER CMD [ARGS...]."""

from __future__ import annotations

import os
from typing import NamedTuple

from minirun.cli.dockerargs import Option, help_lines, parse_options
from minirun.errors import ConfigError
from minirun.spec import parse_env

OPTIONS = (
    Option(("-i", "--interactive"), "interactive", None, "keep stdin open (with -t: relay it to the pty)"),
    Option(("-t", "--tty"), "tty", None, "give the command a pseudo-terminal"),
    Option(("-e", "--env"), "env", "KEY=VALUE", "set an environment variable (repeatable)", repeat=True),
    Option(("-w", "--workdir"), "workdir", "DIR", "working directory inside the container"),
    Option(("-u", "--user"), "user", "UID[:GID]", "run as this user (default: the container's)"),
    Option(("--privileged",), "privileged", None, "all capabilities and no seccomp for this command"),
    Option(("--debug",), "debug", None, "show a traceback when minirun itself fails"),
    Option(("-h", "--help"), "help", None, "show this help"),
)

SUMMARY = "Run CMD inside a running container's namespaces (net, uts, ipc, pid, mnt), like docker exec."


class ExecRequest(NamedTuple):
    container: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    workdir: str | None
    tty: bool
    interactive: bool
    user: str | None = None
    privileged: bool = False


def help_text() -> str:
    return "\n".join(
        ["Usage: minirun exec [OPTIONS] CONTAINER CMD [ARGS...]", "", SUMMARY, "", "Options:", *help_lines(OPTIONS)]
    )


def parse(args: list[str], host_env: dict[str, str] | None = None) -> ExecRequest:
    host_env = dict(os.environ) if host_env is None else host_env
    values, rest = parse_options(args, OPTIONS, "exec")
    if len(rest) < 2:
        raise ConfigError("exec needs a container and a command", hint="usage: minirun exec CONTAINER CMD [ARGS...]")
    env = tuple(pair for item in values["env"] if (pair := parse_env(item, host_env)) is not None)
    return ExecRequest(
        container=rest[0],
        command=tuple(rest[1:]),
        env=env,
        workdir=values.get("workdir"),
        tty=bool(values.get("tty")),
        interactive=bool(values.get("interactive")),
        user=values.get("user"),
        privileged=bool(values.get("privileged")),
    )
