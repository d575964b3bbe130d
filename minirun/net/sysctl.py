"""sysctl writes for the namespace the caller is in (/proc/sys/net is per network namespace).

The knobs: https://docs.kernel.org/networking/ip-sysctl.html
"""

from __future__ import annotations

from minirun.errors import KernelError


def _path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def read(key: str) -> str | None:
    try:
        with open(_path(key)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def write(key: str, value: str, *, missing_ok: bool = False) -> None:
    """`sysctl -w key=value`. With missing_ok, a key the kernel lacks (IPv6 compiled out) is skipped."""
    try:
        with open(_path(key), "w") as f:
            f.write(value)
    except FileNotFoundError as exc:
        if missing_ok:
            return
        raise KernelError(f"sysctl -w {key}={value}", exc.errno) from exc
    except OSError as exc:
        raise KernelError(f"sysctl -w {key}={value}", exc.errno or 0) from exc


def ensure(key: str, value: str) -> bool:
    """Set key to value unless it already is; True when something changed."""
    if read(key) == value:
        return False
    write(key, value)
    return True


def ipv6_off_key(ifname: str) -> str:
    # Interface names may contain dots, which sysctl's dotted notation would split; the path does not.
    return f"net/ipv6/conf/{ifname}/disable_ipv6"


def disable_ipv6(ifname: str) -> None:
    path = "/proc/sys/" + ipv6_off_key(ifname)
    try:
        with open(path, "w") as f:
            f.write("1")
    except FileNotFoundError:
        return  # IPv6 is not built in or the link is gone: nothing to switch off
    except OSError as exc:
        raise KernelError(f"sysctl -w net.ipv6.conf.{ifname}.disable_ipv6=1", exc.errno or 0) from exc
