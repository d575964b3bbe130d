"""`minirun exec`: parsed without typer; the command runs inside a running container."""

from __future__ import annotations

from minirun.cli.report import guarded


def exec_command(args: list[str]) -> int:
    """`minirun exec ARGS`: the command's status, or 125/126/127 as for run."""
    from minirun.cli import exec_args

    def action() -> int:
        request = exec_args.parse(args)
        from minirun.runtime.container import execute

        return execute.exec_in(
            request.container,
            request.command,
            request.env,
            request.workdir,
            tty=request.tty,
            interactive=request.interactive,
            user=request.user,
            privileged=request.privileged,
        )

    return guarded(args, action, exec_args.help_text)
