"""Apply a SecurityProfile to the calling process. Runs in the container's child, just before exec.

The order is the kernel's, as runc's (libcontainer/init_linux.go finalizeNamespace):
1. Drop what the profile does not keep from the bounding set: that needs CAP_SETPCAP, so it comes first.
2. Without no_new_privs, load seccomp now: loading a filter needs no_new_privs or CAP_SYS_ADMIN in the
   effective set, and the next steps may drop it. The filter allows every syscall the steps below make.
3. Switch user, keepcaps off: for a non-root uid the kernel then empties the permitted and effective sets,
   which is what Docker shows for `--user 1000` (CapPrm/CapEff 0, CapBnd still the profile's).
4. Permitted = effective = the profile's set for root, empty otherwise; inheritable empty. Modern Docker
   grants no inheritable capabilities since CVE-2022-24769 (they reached programs run by a non-root user
   through file capabilities). Emptying inheritable also empties the ambient set (the kernel keeps
   ambient within permitted & inheritable).
5. no_new_privs, then the seccomp filter last (capabilities.7, prctl.2 PR_SET_NO_NEW_PRIVS, seccomp.2).

python-prctl's C module `_prctl` is used directly: the `prctl` wrapper module costs ~2 ms to import (it
builds a property per capability), on the path of every container start.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from minirun.security import capabilities

if TYPE_CHECKING:
    from minirun.security import SecurityProfile


def prepare(profile: SecurityProfile):
    """Build the profile's seccomp filter ahead of `confine` (in the child, before it waits for "go");
    None when the profile has none. Raises OSError like confine."""
    if not profile.seccomp:
        return None
    from minirun.security import seccomp

    try:
        return seccomp.Prepared(profile.capabilities)
    except OSError as exc:
        raise OSError(exc.errno, f"build the seccomp filter: {exc.strerror or exc}") from exc


def confine(profile: SecurityProfile, user: tuple[int, int, tuple[int, ...]] | None, prepared=None) -> None:
    """Runs in the child just before exec. `user` is (uid, gid, supplementary gids), None to stay root;
    `prepared` the filter `prepare` built, if it was called.

    Raises OSError (errno and which step) if the kernel refuses a step: then the command must not run.
    """
    try:
        import _prctl  # python-prctl

        if profile.seccomp:
            from minirun.security import seccomp
    except ImportError as exc:
        # Only when the profile was not made by profile_from_options/from_record, and the root has changed.
        raise OSError(errno.ENOENT, f"{exc}: call minirun.security.preload(profile) before pivot_root") from exc

    keep = capabilities.numbers(profile.capabilities)
    everything = range(capabilities.last_cap() + 1)
    for cap in everything:
        if cap not in keep:
            _step(_prctl.prctl, f"drop {_name(cap)} from the bounding set", _prctl.PR_CAPBSET_DROP, cap)
    seccomp_first = profile.seccomp and not profile.no_new_privs
    if seccomp_first:
        _step(seccomp.load, "load the seccomp filter", profile.capabilities, prepared)
    uid = 0
    if user is not None:
        uid, gid, groups = user
        _step(_prctl.prctl, "clear keepcaps", _prctl.PR_SET_KEEPCAPS, 0)
        _step(os.setgroups, f"setgroups({list(groups)})", list(groups))
        _step(os.setgid, f"setgid({gid})", gid)
        _step(os.setuid, f"setuid({uid})", uid)
    granted = sorted(keep) if uid == 0 else []
    refused = [cap for cap in everything if cap not in granted]
    # set_caps(effective+, permitted+, inheritable+, effective-, permitted-, inheritable-)
    names = ",".join(_name(c) for c in granted) or "none"
    _step(_prctl.set_caps, f"set capabilities ({names})", granted, granted, [], refused, refused, list(everything))
    if profile.no_new_privs:
        _step(_prctl.prctl, "set no_new_privs", _prctl.PR_SET_NO_NEW_PRIVS, 1)
    if profile.seccomp and not seccomp_first:
        _step(seccomp.load, "load the seccomp filter", profile.capabilities, prepared)


def preload(profile: SecurityProfile) -> None:
    """Load now what `confine` needs later: python-prctl, the seccomp module, libseccomp and the kernel's
    last capability number. Call before the child's root changes: after pivot_root into an image the
    host's files (site-packages, /usr/lib, maybe /proc) are out of sight, and confine would fail there.
    Done in the launcher before fork, it costs the child nothing. Best-effort: a failure here shows up
    again, with its reason, in confine."""
    capabilities.last_cap()
    try:
        import _prctl  # noqa: F401

        if profile.seccomp:
            from minirun.security import seccomp

            seccomp.library()
    except (ImportError, OSError):
        pass


def _name(cap: int) -> str:
    return capabilities.short(capabilities.NAMES[cap]) if cap < len(capabilities.NAMES) else str(cap)


def _step(function, what: str, *args) -> None:
    try:
        function(*args)
    except OSError as exc:
        reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
        raise OSError(exc.errno, f"{what}: {reason}") from exc
