"""Errors meant for the operator: one line, what went wrong and how to fix it."""

from __future__ import annotations

import errno as _errno
import os

# Docker's `run` convention (see DESIGN.md: exit codes).
EXIT_MINIRUN_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


class MinirunError(Exception):
    """An expected failure: printed as `minirun: error: <msg>` plus an optional hint, never a traceback."""

    def __init__(self, msg: str, *, hint: str | None = None, code: int = EXIT_MINIRUN_FAILED) -> None:
        super().__init__(msg)
        self.msg = msg
        self.hint = hint
        self.code = code

    def __str__(self) -> str:
        return f"{self.msg} ({self.hint})" if self.hint else self.msg


class ConfigError(MinirunError):
    """The user's input is invalid; nothing was changed."""


class Conflict(MinirunError):
    """Something already exists and is not what minirun needs."""


class NotFound(MinirunError):
    def __init__(self, msg: str, *, hint: str | None = None, code: int = 1) -> None:
        super().__init__(msg, hint=hint, code=code)


class KernelError(MinirunError):
    """A syscall or netlink request failed: names the operation, the object and the errno."""

    def __init__(self, op: str, err: int, *, hint: str | None = None) -> None:
        name = _errno.errorcode.get(err, str(err))
        super().__init__(f"{op}: {os.strerror(err)} ({name})", hint=hint)
        self.op = op
        self.errno = err


class StepError(MinirunError):
    """A plan step failed; everything done before it was rolled back."""

    def __init__(self, index: int, total: int, name: str, cause: BaseException) -> None:
        cause_text = cause.msg if isinstance(cause, MinirunError) else str(cause)
        super().__init__(
            f"step {index}/{total} ({name}) failed: {cause_text}; what was done so far was rolled back",
            hint=cause.hint if isinstance(cause, MinirunError) else None,
        )
        self.step = name


class TeardownError(MinirunError):
    """Teardown is best-effort: every failure is collected and reported together."""

    def __init__(self, what: str, errors: list[str]) -> None:
        super().__init__(f"{what}: " + "; ".join(errors), code=1)
        self.errors = errors
