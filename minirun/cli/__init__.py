"""Command-line entry point. `minirun run` and `minirun exec` are dispatched without importing typer
(40-60 ms) or pyroute2; every other command goes through the typer app in `minirun.cli.app`."""

from __future__ import annotations

import os
import sys

from minirun.errors import EXIT_MINIRUN_FAILED, MinirunError

DEBUG_ENV = "MINIRUN_DEBUG"


def report(exc: BaseException, *, debug: bool) -> None:
    """One line for the operator; the traceback only with --debug / MINIRUN_DEBUG=1."""
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, OSError):
        from minirun.errors import host_error

        exc = host_error(exc) or exc
    if isinstance(exc, MinirunError):
        hint = f"; {exc.hint}" if exc.hint else ""
        print(f"minirun: error: {exc.msg}{hint}", file=sys.stderr)
    else:
        print(
            f"minirun: error: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)",
            file=sys.stderr,
        )


def _guarded(args: list[str], action, help_text) -> int:
    """Run `action()`, mapping errors to Docker's exit codes: 125 when minirun itself failed."""
    from minirun.cli.dockerargs import HelpRequested

    debug = os.environ.get(DEBUG_ENV) == "1" or "--debug" in args[: _first_positional(args)]
    try:
        return action()
    except HelpRequested:
        print(help_text())
        return 0
    except KeyboardInterrupt:
        return 130
    except MinirunError as exc:
        report(exc, debug=debug)
        return exc.code
    except Exception as exc:  # a bug, not a user mistake
        report(exc, debug=debug)
        return EXIT_MINIRUN_FAILED


def run_command(args: list[str]) -> int:
    """`minirun run ARGS`: returns the exit status (Docker's convention)."""
    from minirun.cli import run_args

    def action() -> int:
        spec = run_args.parse(args)
        if spec.detach and not spec.dry_run:
            print(_run_detached(spec))
            return 0
        from minirun.runtime import container

        return container.run(spec)

    return _guarded(args, action, run_args.help_text)


def _run_detached(spec) -> str:
    from minirun.runtime import client
    from minirun.runtime.privileges import require_root

    require_root()
    pod_existed = spec.pod is None or _pod_exists(spec.pod)
    from minirun.runtime.request import run_request

    response = client.request(run_request(spec))
    if not response.get("ok"):
        raise MinirunError(
            response.get("error", "unknown error"),
            hint=response.get("hint"),
            code=response.get("code", EXIT_MINIRUN_FAILED),
        )
    if not pod_existed and _pod_exists(spec.pod):
        from minirun.runtime import pod

        # the supervisor's worker made it; say so here, where the user looks (as a foreground run does)
        pod.announce(pod.find(spec.pod))
    return response["id"]


def _pod_exists(name: str) -> bool:
    from minirun import paths

    return os.path.exists(paths.pod_record(name))


def exec_command(args: list[str]) -> int:
    """`minirun exec ARGS`: the command's status, or 125/126/127 as for run."""
    from minirun.cli import exec_args

    def action() -> int:
        request = exec_args.parse(args)
        from minirun.runtime import enter

        return enter.exec_in(
            request.container,
            request.command,
            request.env,
            request.workdir,
            tty=request.tty,
            interactive=request.interactive,
            user=request.user,
            privileged=request.privileged,
        )

    return _guarded(args, action, exec_args.help_text)


def _first_positional(args: list[str]) -> int:
    # Good enough to find --debug among minirun's own options without parsing twice.
    for i, arg in enumerate(args):
        if arg == "--" or not arg.startswith("-"):
            return i
    return len(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return run_command(argv[1:])
    if argv[:1] == ["exec"]:
        return exec_command(argv[1:])
    from minirun.cli.app import run_app

    return run_app(argv)
