"""Confinement of the container's command: capabilities, no_new_privs and seccomp (issue 5).

The launcher turns `--cap-add`, `--cap-drop`, `--privileged` and `--security-opt` into a SecurityProfile
(`profile_from_options`), stores it in the container record (`as_record`), and the child applies it with
`confine` just before exec. Importing this package is cheap; python-prctl and libseccomp are loaded when a
profile is made (`profile_from_options`, `from_record`, both in the launcher), so that the child, which may
have pivoted into an image by the time it confines itself, finds them already loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from minirun.errors import ConfigError
from minirun.security import capabilities

# Go's strconv.ParseBool, which Docker uses.
_TRUE = {"1", "t", "true"}
_FALSE = {"0", "f", "false"}


class SecurityProfile(NamedTuple):
    capabilities: frozenset[str]  # canonical "CAP_CHOWN" names
    no_new_privs: bool = True
    seccomp: bool = True  # minirun's default profile (Docker's refusals); False: unconfined
    privileged: bool = False

    def as_record(self) -> dict:
        """JSON-able, for the container record."""
        return {
            "capabilities": sorted(self.capabilities, key=capabilities.NUMBERS.__getitem__),
            "no_new_privs": self.no_new_privs,
            "seccomp": "default" if self.seccomp else "unconfined",
            "privileged": self.privileged,
        }

    @classmethod
    def from_record(cls, record: dict | None) -> SecurityProfile:
        """The profile a record describes; a record from before issue 5 (None or no key) gets the default."""
        default = default_profile()
        if not record:
            return _preloaded(default)
        caps = record.get("capabilities")
        profile = cls(
            # A name this version does not know (written by a newer one) is left out rather than fatal.
            capabilities=default.capabilities if caps is None else frozenset(caps) & set(capabilities.NAMES),
            no_new_privs=bool(record.get("no_new_privs", default.no_new_privs)),
            seccomp=record.get("seccomp", "default") not in ("unconfined", False),
            privileged=bool(record.get("privileged", False)),
        )
        return _preloaded(profile)

    def describe(self) -> str:
        """One line for --explain: `capabilities: default +NET_ADMIN -MKNOD; no_new_privs; seccomp: default`."""
        if self.privileged:
            caps = "all (--privileged)"
        elif self.capabilities == capabilities.DEFAULT:
            caps = "default"
        elif not self.capabilities:
            caps = "none"
        else:
            added = sorted(self.capabilities - capabilities.DEFAULT)
            dropped = sorted(capabilities.DEFAULT - self.capabilities)
            parts = [f"+{capabilities.short(c)}" for c in added] + [f"-{capabilities.short(c)}" for c in dropped]
            caps = " ".join(["default", *parts])
        nnp = "no_new_privs" if self.no_new_privs else "no_new_privs off"
        return f"capabilities: {caps}; {nnp}; seccomp: {'default' if self.seccomp else 'unconfined'}"


def default_profile() -> SecurityProfile:
    """Docker's 14 capabilities, no_new_privs, minirun's default seccomp filter."""
    return SecurityProfile(capabilities=capabilities.DEFAULT)


def profile_from_options(
    cap_add: Sequence[str] = (),
    cap_drop: Sequence[str] = (),
    privileged: bool = False,
    security_opts: Sequence[str] = (),
) -> SecurityProfile:
    """`docker run`'s confinement options as a profile. Raises ConfigError naming a bad value."""
    no_new_privs, seccomp = True, True
    for opt in security_opts:
        key, value = _split_opt(opt)
        if key == "no-new-privileges":
            no_new_privs = _parse_bool(opt, value)
        elif key == "seccomp" and value in ("unconfined", "builtin"):
            seccomp = value == "builtin"
        elif key == "seccomp":
            raise ConfigError(
                f"--security-opt {opt}: custom seccomp profiles are not supported",
                hint="use seccomp=unconfined, or the default filter (leave the option out)",
            )
        else:
            raise ConfigError(
                f"--security-opt {opt}: not supported",
                hint="minirun supports no-new-privileges[=true|false] and seccomp=unconfined",
            )
    # Validated even with --privileged, which then ignores them (as Docker does).
    caps = capabilities.resolve(cap_add, cap_drop)
    if privileged:
        return _preloaded(SecurityProfile(capabilities.supported(), no_new_privs, seccomp=False, privileged=True))
    return _preloaded(SecurityProfile(caps, no_new_privs, seccomp))


def _preloaded(profile: SecurityProfile) -> SecurityProfile:
    preload(profile)
    return profile


def _split_opt(opt: str) -> tuple[str, str | None]:
    # Docker takes key=value, and the older key:value.
    for sep in ("=", ":"):
        if sep in opt:
            key, value = opt.split(sep, 1)
            return key.strip(), value.strip()
    return opt.strip(), None


def _parse_bool(opt: str, value: str | None) -> bool:
    if value is None or value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(
        f"--security-opt {opt}: {value!r} is not true or false", hint="use no-new-privileges=true or =false"
    )


from minirun.security.confine import confine, preload, prepare  # noqa: E402 - confine.py needs nothing from here at runtime

__all__ = ["SecurityProfile", "confine", "default_profile", "preload", "prepare", "profile_from_options"]
