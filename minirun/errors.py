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


# A sick host (issue 13): the errno of a failed write to minirun's own state or data, as one line naming
# the path, which of minirun's roots it is in, and the way out.
_SICK_HOST = {
    _errno.ENOSPC: ("no space left on the filesystem of {path}", "free space there"),
    _errno.EDQUOT: ("disk quota exceeded on the filesystem of {path}", "free space there"),
    _errno.EROFS: ("{path} is on a read-only filesystem", "remount it read-write"),
    _errno.ENOTDIR: ("{path}: a part of that path is a file, not a directory", "move that file away"),
    _errno.EACCES: ("permission denied on {path}", "fix its permissions (minirun runs as root)"),
    _errno.EPERM: ("operation not permitted on {path}", "check its attributes (chattr) and mount options"),
    _errno.EEXIST: ("{path} is in the way", "move it away"),
    _errno.EISDIR: ("{path} is a directory where minirun keeps a file", "move it away"),
}


def host_error(exc: OSError, code: int = EXIT_MINIRUN_FAILED) -> MinirunError | None:
    """A MinirunError for an OSError on a path in minirun's state or data root; None for anything else
    (then it is a bug, and reported as one)."""
    from minirun import paths

    known = _SICK_HOST.get(exc.errno or 0)
    path = exc.filename if isinstance(exc.filename, str) else None
    if known is None or path is None:
        return None
    roots = (
        (paths.state_root(), "state dir", paths.STATE_DIR_ENV),
        (paths.data_root(), "data dir", paths.DATA_DIR_ENV),
    )
    for root, label, env in roots:
        if os.path.normpath(path) == os.path.normpath(root) or path.startswith(os.path.normpath(root) + "/"):
            what, fix = known
            return MinirunError(f"{what.format(path=path)} ({label} {root})", hint=f"{fix}, or set {env}", code=code)
    return None
