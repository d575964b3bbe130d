"""Running a container: in the foreground (`minirun run`: create, wait, tear down, exit with its status) or
detached in a supervisor worker (`minirun run -d`: create, hand the output to the supervisor's log relay,
leave PID 1 to the supervisor, which reaps it and tears down).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

from minirun import paths
from minirun.errors import EXIT_MINIRUN_FAILED, MinirunError
from minirun.plan import Narrator, Timing
from minirun.runtime import logfile, model, store
from minirun.runtime.container import launch, teardown
from minirun.runtime.container.create import create
from minirun.runtime.model import ContainerStatus, move_container
from minirun.spec import ContainerSpec


def run_foreground(spec: ContainerSpec) -> int:
    """Run `spec` in the foreground; return the exit status Docker would give."""
    narrator = Narrator.for_flags(explain=spec.explain, dry_run=spec.dry_run, verbose=spec.verbose)
    if spec.dry_run:
        create(spec, narrator=narrator, dry_run=True)
        return 0
    pty = None
    if spec.tty:
        from minirun.runtime.tty import Pty

        pty = Pty(interactive=spec.interactive)
    created = create(spec, stdio=pty.child_stdio if pty else None, controlling_tty=pty is not None, narrator=narrator)
    status = EXIT_MINIRUN_FAILED
    try:
        clock = time.perf_counter()
        failure = created.launch.release()
        if failure:
            print(f"minirun: error: {launch.describe_failure(failure)}", file=sys.stderr)
        else:
            if narrator is not None:
                narrator.step(created.exec_step, time.perf_counter() - clock)
            if spec.timings:
                _print_exec_timings(created.timings, clock)
        if pty is not None:
            pty.start()
        try:
            status = launch.wait_forwarding_signals(created.launch.pid, on_winch=pty.resize if pty else None)
        finally:
            if pty is not None:
                pty.finish()
    finally:
        clock = time.perf_counter()
        move_container(created.record, ContainerStatus.EXITED, exit_code=status, finished=store.now_iso())
        teardown.teardown(created.record, host_rtnl=created.host_rtnl, defer_link_check=True)
        if spec.timings:
            _print_timings([Timing("teardown", time.perf_counter() - clock)])
    return status


def run_detached(
    spec: ContainerSpec,
    supervisor: dict[str, int | None],
    log_channel: socket.socket,
    previous: dict[str, Any] | None = None,
    restart_count: int = 0,
) -> str:
    """In a supervisor worker: create the container with its output going to a pipe the supervisor relays
    into its capped log (see logrelay), let it exec, and make the supervisor its owner. Returns the
    container id; the worker then exits and PID 1 is adopted by the supervisor (a child subreaper), which
    records the exit code and tears down when the container ends. With `previous`: that created or exited
    container started again (`start`), appending to its log."""
    from minirun.runtime.supervisor import logrelay

    container_id = previous["id"] if previous is not None else model.new_container_id()
    log_path = paths.container_log(container_id)
    options = logfile.parse_options(spec.log_options)
    output_r, output_w = os.pipe2(os.O_CLOEXEC)
    null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        created = create(
            spec,
            detached=True,
            stdio=(null_fd, output_w, output_w),
            log_path=log_path,
            container_id=container_id,
            previous=previous,
            restart_count=restart_count,
        )
    except BaseException:
        os.close(output_r)
        raise
    finally:
        os.close(output_w)
        os.close(null_fd)
    record = created.record
    # A container that never ran leaves nothing (Docker would keep a "Created" one); started again, it stays.
    auto_remove = previous.get("auto_remove", False) if previous is not None else True
    try:  # before it may exec: its very first byte goes through the relay
        logrelay.hand_off(log_channel, container_id, log_path, options, output_r)
    except OSError as exc:
        created.launch.abort()
        _never_ran(created, EXIT_MINIRUN_FAILED, auto_remove)
        raise MinirunError(f"the supervisor did not take the container's output: {exc.strerror}") from None
    finally:
        os.close(output_r)
    failure = created.launch.release()
    if failure:
        os.waitpid(created.launch.pid, 0)
        _never_ran(created, launch.failure_exit_code(failure), auto_remove)
        raise MinirunError(launch.describe_failure(failure), code=launch.failure_exit_code(failure))
    record["owner"] = supervisor
    store.save(record)
    return record["id"]


def _never_ran(created, exit_code: int, auto_remove: bool) -> None:
    """The container failed before its command ran: recorded as exited with `exit_code`, then torn down."""
    record = created.record
    move_container(record, ContainerStatus.EXITED, exit_code=exit_code, finished=store.now_iso())
    record["auto_remove"] = auto_remove
    teardown.teardown(record, host_rtnl=created.host_rtnl)


def _print_exec_timings(timings: list[Timing], clock: float) -> None:
    timings.append(Timing("exec", time.perf_counter() - clock))
    in_process = sum(t.seconds for t in timings if t.name != "validate")
    _print_timings([*timings, Timing("fork-to-exec", in_process)])


def _print_timings(timings: list[Timing]) -> None:
    for t in timings:
        print(f"minirun: timing: {t.name:<14} {t.seconds * 1000:8.2f} ms", file=sys.stderr)
