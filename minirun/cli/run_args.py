"""`minirun run` arguments, parsed the way `docker run` parses them: options first, then CMD [ARGS...]."""

from __future__ import annotations

import os

from minirun.cli.dockerargs import HelpRequested, Option, help_lines, parse_options
from minirun.errors import ConfigError
from minirun.spec import (
    NETWORK_MODES,
    ContainerSpec,
    parse_env,
    validate_hostname,
    validate_mtu,
    validate_name,
    validate_network,
    validate_pod_name,
)

__all__ = ["HelpRequested", "OPTIONS", "help_text", "parse"]

OPTIONS = (
    Option(("-d", "--detach"), "detach", None, "run in the background and print the container id"),
    Option(("-i", "--interactive"), "interactive", None, "keep stdin open (with -t: relay it to the pty)"),
    Option(("-t", "--tty"), "tty", None, "give the command a pseudo-terminal"),
    Option(("--name",), "name", "NAME", "name the container (unique; default: generated)"),
    Option(("--hostname",), "hostname", "NAME", "hostname inside the container (default: the container id)"),
    Option(
        ("-e", "--env"), "env", "KEY=VALUE", "set an environment variable (repeatable; -e KEY copies it)", repeat=True
    ),
    Option(("-w", "--workdir"), "workdir", "DIR", "working directory of the command"),
    Option(("--network",), "network", "MODE", f"{'|'.join(NETWORK_MODES)} (default: bridge, on minirun0)"),
    Option(("--pod",), "pod", "POD", "join pod POD's net, uts and ipc namespaces (created on first use)"),
    Option(("--mtu",), "mtu", "BYTES", "MTU of eth0 and its host-side veth (default: 1500)"),
    Option(
        ("--restart",),
        "restart",
        "POLICY",
        "with -d: no (default), always, unless-stopped, on-failure[:N]: start it again when it ends",
    ),
    Option(
        ("-p", "--publish"),
        "publish",
        "[IP:]HOST:CTR[/udp]",
        "publish a container port on the host (repeatable)",
        repeat=True,
    ),
    Option(
        ("--image",),
        "image",
        "IMAGE",
        "run in IMAGE's filesystem (see 'minirun image ls'; default: the host's, read-only, private /tmp /run /dev)",
    ),
    Option(("--entrypoint",), "entrypoint", "CMD", "override the image's Entrypoint"),
    Option(("--read-only",), "read_only", None, "mount the image's root filesystem read-only"),
    Option(("-u", "--user"), "user", "UID[:GID]", "run as this user (a name from the image's /etc/passwd, or ids)"),
    Option(("--dns",), "dns", "IP", "nameserver for the container's /etc/resolv.conf (repeatable)", repeat=True),
    Option(
        ("--add-host",), "add_host", "NAME:IP", "add a line to the container's /etc/hosts (repeatable)", repeat=True
    ),
    Option(("--cap-add",), "cap_add", "CAP", "add a Linux capability (NET_ADMIN, ..., ALL; repeatable)", repeat=True),
    Option(
        ("--cap-drop",), "cap_drop", "CAP", "drop a Linux capability (ALL drops every one; repeatable)", repeat=True
    ),
    Option(
        ("--privileged",),
        "privileged",
        None,
        "all capabilities, no seccomp, no masked paths, rw /sys, devices usable; without --image the host's "
        "files are WRITABLE",
    ),
    Option(
        ("--security-opt",),
        "security_opt",
        "OPT",
        "no-new-privileges[=true|false], seccomp=unconfined (repeatable)",
        repeat=True,
    ),
    Option(
        ("--log-opt",),
        "log_opt",
        "KEY=VALUE",
        "detached log: max-size=SIZE (k/m/g), max-file=N (default: max-size=10m, max-file=3; repeatable)",
        repeat=True,
    ),
    Option(("--init",), "init", None, "run an init (tini) as PID 1 that forwards signals and reaps zombies"),
    Option(("--rm",), "remove", None, "remove a detached container when it exits (foreground runs always are)"),
    Option(("--explain",), "explain", None, "print each step as the commands a person would type, as it runs"),
    Option(("--dry-run",), "dry_run", None, "print the steps (with placeholders) and change nothing"),
    Option(("-v", "--verbose"), "verbose", None, "log each step with its duration, on stderr"),
    Option(("--timings",), "timings", None, "print how long each setup step took, on stderr"),
    Option(("--debug",), "debug", None, "show a traceback when minirun itself fails"),
    Option(("-h", "--help"), "help", None, "show this help"),
)

USAGE = "Usage: minirun run [OPTIONS] [--image IMAGE] CMD [ARGS...]"
SUMMARY = "Run CMD in new net, uts, ipc, pid and mount namespaces, on the minirun0 bridge (like docker run)."


def help_text() -> str:
    return "\n".join(
        [
            USAGE,
            "",
            SUMMARY,
            "",
            "Options:",
            *help_lines(OPTIONS),
            "",
            "Exit status: the command's own; 125 minirun failed, 126 not executable, 127 not found,",
            "128+N killed by signal N.",
        ]
    )


def parse(args: list[str], host_env: dict[str, str] | None = None) -> ContainerSpec:
    """Parse `minirun run` arguments into a validated ContainerSpec; raise ConfigError or HelpRequested."""
    host_env = dict(os.environ) if host_env is None else host_env
    values, command = parse_options(args, OPTIONS, "run")
    if not command and not values.get("image"):
        raise ConfigError("no command given", hint="usage: minirun run [OPTIONS] CMD [ARGS...] (or give --image)")
    return _to_spec(values, tuple(command), host_env)


def _to_spec(values: dict, command: tuple[str, ...], host_env: dict[str, str]) -> ContainerSpec:
    # The checks run in the order they always did: with several faults, the same one is reported.
    mtu = _parse_mtu(values.get("mtu"))
    env = tuple(pair for item in values["env"] if (pair := parse_env(item, host_env)) is not None)
    name = values.get("name")
    hostname = values.get("hostname")
    network = validate_network(values.get("network", "bridge"))
    pod = values.get("pod")
    _check_pod_member(values, pod)
    if mtu is not None and network in ("none", "host"):
        raise ConfigError(f"--mtu has no effect with --network {network}", hint="drop --mtu or use --network bridge")
    ports = _published_ports(values["publish"], network, pod)
    detach = bool(values.get("detach"))
    _check_detach(values, detach)
    from minirun.fs.etcfiles import parse_add_host, validate_dns
    from minirun.runtime.logfile import parse_options as parse_log_options

    log_options = tuple(values["log_opt"])
    parse_log_options(log_options)  # validated now: a detached run must not fail in the supervisor
    if values.get("read_only") and not values.get("image"):
        raise ConfigError("--read-only needs --image", hint="it makes the image's root read-only: add --image NAME")
    restart = _restart_policy(values.get("restart"), bool(values.get("remove")))
    return ContainerSpec(
        restart=restart,
        command=command,
        image=values.get("image"),
        entrypoint=values.get("entrypoint"),
        read_only=bool(values.get("read_only")),
        user=values.get("user"),
        dns=tuple(validate_dns(v) for v in values["dns"]),
        add_hosts=tuple(parse_add_host(v) for v in values["add_host"]),
        cap_add=tuple(values["cap_add"]),
        cap_drop=tuple(values["cap_drop"]),
        privileged=bool(values.get("privileged")),
        security_opts=tuple(values["security_opt"]),
        log_options=log_options,
        name=validate_name(name) if name is not None else None,
        hostname=validate_hostname(hostname) if hostname is not None else None,
        env=env,
        workdir=values.get("workdir"),
        network=network,
        mtu=validate_mtu(mtu),
        remove=bool(values.get("remove")),
        timings=bool(values.get("timings")),
        debug=bool(values.get("debug")),
        detach=detach,
        interactive=bool(values.get("interactive")),
        tty=bool(values.get("tty")),
        init=bool(values.get("init")),
        pod=pod,
        explain=bool(values.get("explain")),
        dry_run=bool(values.get("dry_run")),
        verbose=bool(values.get("verbose")),
        ports=ports,
    )


def _restart_policy(text: str | None, remove: bool) -> str:
    if text is None:
        return "no"
    from minirun import restart_policy  # only when given: off the hot path of every run

    policy = restart_policy.validate(text)
    if policy != "no" and remove:
        raise ConfigError("--restart and --rm conflict", hint="a container removed when it ends cannot start again")
    return policy


def _parse_mtu(mtu: str | None) -> int | None:
    if mtu is None:
        return None
    try:
        return int(mtu)
    except ValueError:
        raise ConfigError(f'invalid --mtu "{mtu}"', hint="give a number of bytes, e.g. --mtu 1400") from None


def _check_pod_member(values: dict, pod: str | None) -> None:
    """A pod member shares the pod's network, hostname and MTU: it may not set its own."""
    if pod is None:
        return
    validate_pod_name(pod)
    for flag, given in (("--network", "network"), ("--hostname", "hostname"), ("--mtu", "mtu")):
        if values.get(given) is not None:
            raise ConfigError(
                f"{flag} cannot be given to a pod member: it belongs to the pod",
                hint=f"set it when creating the pod (minirun pod create {pod} ...)",
            )


def _published_ports(publish: list[str], network: str, pod: str | None) -> tuple:
    if not publish:
        return ()
    from minirun.net.ports import parse_all

    if pod is not None:
        raise ConfigError(
            "-p cannot be given to a pod member: ports belong to the pod",
            hint=f"publish them when creating the pod: minirun pod create -p ... {pod}",
        )
    if network in ("none", "host"):
        raise ConfigError(f"-p has no effect with --network {network}", hint="publish from --network bridge")
    return parse_all(publish)


def _check_detach(values: dict, detach: bool) -> None:
    if detach and values.get("explain"):
        raise ConfigError("--explain cannot follow a detached run", hint="use --dry-run, or run in the foreground")
    if detach and values.get("tty"):
        raise ConfigError("-t with -d is not supported yet", hint="run detached without -t, then 'minirun exec -it'")
