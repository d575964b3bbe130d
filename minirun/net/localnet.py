"""`route_localnet` on minirun's bridges, and when it may be on (the class of CVE-2020-8558).

A port published on 127.0.0.1 (or on 0.0.0.0, which includes it) is DNATed from the host's loopback to a
container; the kernel routes 127/8 out of a device only when that device has `route_localnet=1`. The same
switch also stops the kernel from treating a packet that *arrives* on the bridge for 127.0.0.1 as a
martian: a container that hand-builds a frame to the gateway's MAC for 127.0.0.1 then reaches every
service the host binds to loopback. That is CVE-2020-8558 (kube-proxy set route_localnet and added a
DROP of 127/8 not from lo as the fix); Docker guards the same way in raw PREROUTING (moby/moby#45610).

minirun's rules, kept by firewall.ensure_network/ensure_ports/remove_ports:
- the guard (ports.render_guard) exists whenever any interface routes 127/8, and is added before
  route_localnet is switched on;
- route_localnet goes back to 0 on a bridge when the last port that needs it there is gone, and the guard
  goes after it when no interface routes 127/8 any more.

https://nvd.nist.gov/vuln/detail/CVE-2020-8558; route_localnet in
https://docs.kernel.org/networking/ip-sysctl.html
"""

from __future__ import annotations

import os

from minirun.errors import KernelError

CONF_DIR = "/proc/sys/net/ipv4/conf"
# Never switched on by minirun: "lo" routes 127/8 by nature, "default" only seeds new devices (whose own
# value is then read), and host veths ("veth" + hash, Docker's too) are ports of a bridge, never routed.
_NOT_CHECKED = ("lo", "default")


def _key(ifname: str) -> str:
    # A path, not sysctl's dotted name: interface names may contain dots.
    return f"{CONF_DIR}/{ifname}/route_localnet"


def enabled(ifname: str) -> bool:
    try:  # os.open/os.read: a third of open()'s cost, paid once per interface per run that checks
        fd = os.open(_key(ifname), os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        return os.read(fd, 8).strip() == b"1"
    finally:
        os.close(fd)


def routing_interfaces() -> list[str]:
    """The interfaces (and "all") that route 127/8 (route_localnet=1): each makes the guard necessary.
    One small read per interface; callers do it only when the guard is missing or a port went."""
    try:
        names = sorted(os.listdir(CONF_DIR))
    except FileNotFoundError:
        return []
    return [n for n in names if n not in _NOT_CHECKED and not n.startswith("veth") and enabled(n)]


def set_routing(bridge: str, on: bool) -> bool:
    """Switch route_localnet on `bridge`; True when it changed. A bridge that is gone routes nothing."""
    if enabled(bridge) == on:
        return False
    try:
        with open(_key(bridge), "w") as f:
            f.write("1" if on else "0")
    except FileNotFoundError:
        if on:
            raise KernelError(f"sysctl -w net.ipv4.conf.{bridge}.route_localnet=1", 2) from None
        return False
    except OSError as exc:
        raise KernelError(f"sysctl -w net.ipv4.conf.{bridge}.route_localnet={int(on)}", exc.errno or 0) from exc
    return True
