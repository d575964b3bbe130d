"""`minirun run`: parsed without typer (40-60 ms) or pyroute2 on its path; a detached run is a request to
the supervisor, a foreground one runs here."""

from __future__ import annotations

from minirun.cli.report import guarded
from minirun.errors import EXIT_MINIRUN_FAILED, ConfigError, MinirunError


def run_command(args: list[str]) -> int:
    """`minirun run ARGS`: returns the exit status (Docker's convention)."""
    from minirun.cli import run_args

    def action() -> int:
        spec = run_args.parse(args)
        if spec.detach and not spec.dry_run:
            print(_run_detached(spec))
            return 0
        if spec.restart != "no":
            hint = "a foreground run is removed when it ends: the supervisor restarts detached ones"
            raise ConfigError("--restart needs -d", hint=hint)
        from minirun.runtime.container import run

        return run.run_foreground(spec)

    return guarded(args, action, run_args.help_text)


def create_command(args: list[str]) -> int:
    """`minirun create ARGS` (`run`'s options but -d): the container on record, not started; prints its id."""
    from minirun.cli import run_args

    def action() -> int:
        spec = run_args.parse(args)
        if spec.detach or spec.dry_run:
            raise ConfigError(
                "create takes no -d, --dry-run or --explain", hint="'minirun start' runs a created container detached"
            )
        from minirun.runtime.container import stopped

        print(stopped.create(spec))
        return 0

    return guarded(args, action, run_args.help_text)


def _run_detached(spec) -> str:
    from minirun.runtime.privileges import require_root
    from minirun.runtime.supervisor import client

    require_root()
    pod_existed = spec.pod is None or _pod_exists(spec.pod)
    from minirun.runtime.supervisor.protocol import run_request

    response = client.request(run_request(spec))
    if not response.get("ok"):
        raise MinirunError(
            response.get("error", "unknown error"),
            hint=response.get("hint"),
            code=response.get("code", EXIT_MINIRUN_FAILED),
        )
    if not pod_existed and _pod_exists(spec.pod):
        from minirun.runtime import pod, store

        # the supervisor's worker made it; say so here, where the user looks (as a foreground run does)
        pod.announce(store.find_pod(spec.pod))
    return response["id"]


def _pod_exists(name: str) -> bool:
    from minirun.runtime import store

    return store.pod_exists(name)
