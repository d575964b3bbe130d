"""A small rtnetlink client built on pyroute2's message classes.

Why not `pyroute2.IPRoute`: importing the `pyroute2` package runs its `__init__`, which eagerly loads NDB,
IPDB, conntrack and asyncio — 90-175 ms on this kind of machine, more than the whole container run should
cost. pyroute2 documents the low-level path we use instead ("instantiate a message class, fill the fields,
encode the packet, send the buffer", pyroute2/netlink/__init__.py): we import only the codecs (ifinfmsg,
ifaddrmsg, rtmsg; ~15 ms) and drive one NETLINK_ROUTE socket ourselves.

Each `Rtnl` is bound to the network namespace its socket was created in. The launcher gets a socket inside
the container's netns from the container's first process (sent over SCM_RIGHTS), so it never calls setns.
"""

from __future__ import annotations

import errno
import importlib.util
import socket
import struct
import sys
import types
from typing import Any

NETLINK_ROUTE = 0
NETLINK_EXT_ACK = 11
SOL_NETLINK = 270

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_GETNSID = 90

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000

_HEADER = struct.Struct("=IHHII")


def _load_codecs() -> types.SimpleNamespace:
    """Import pyroute2's message classes without running pyroute2/__init__.py (see the module docstring)."""
    stubbed = "pyroute2" not in sys.modules
    if stubbed:
        spec = importlib.util.find_spec("pyroute2")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("pyroute2 is not installed")
        package = types.ModuleType("pyroute2")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["pyroute2"] = package
    try:
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
        from pyroute2.netlink.rtnl.nsidmsg import nsidmsg
        from pyroute2.netlink.rtnl.rtmsg import rtmsg
    finally:
        if stubbed:
            # A later full `import pyroute2` (tests do it) then runs the real __init__ and reuses these modules.
            del sys.modules["pyroute2"]
    return types.SimpleNamespace(ifinfmsg=ifinfmsg, ifaddrmsg=ifaddrmsg, rtmsg=rtmsg, nsidmsg=nsidmsg)


_codecs: types.SimpleNamespace | None = None


def codecs() -> types.SimpleNamespace:
    global _codecs
    if _codecs is None:
        _codecs = _load_codecs()
    return _codecs


class NetlinkError(OSError):
    """A request answered with an error; `.errno` is the kernel's errno (positive)."""


def open_route_socket() -> socket.socket:
    """A NETLINK_ROUTE socket in the caller's current network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    sock.bind((0, 0))
    return sock


class Rtnl:
    """Request/response over one NETLINK_ROUTE socket. Not thread-safe; one per namespace."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock if sock is not None else open_route_socket()
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, msg: Any, msg_type: int, flags: int = 0) -> list[Any]:
        """Send `msg`; return the decoded replies (dumps) or [] for a plain ack; raise NetlinkError."""
        self._seq += 1
        seq = self._seq
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        msg["header"]["sequence_number"] = seq
        msg["header"]["pid"] = 0
        msg.encode()
        self.sock.send(msg.data)
        reply_class = type(msg)
        replies: list[Any] = []
        while True:
            data = self.sock.recv(1 << 18)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _flags, mseq, _ = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    raise NetlinkError(errno.EPROTO, "truncated netlink message")
                chunk = data[offset : offset + length]
                offset += (length + 3) & ~3
                if mseq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", chunk, _HEADER.size)
                    if code:
                        raise NetlinkError(-code, errno.errorcode.get(-code, str(-code)))
                    return replies
                if kind == NLMSG_DONE:
                    return replies
                reply = reply_class(chunk)
                reply.decode()
                replies.append(reply)

    def dump(self, msg: Any, msg_type: int) -> list[Any]:
        return self.request(msg, msg_type, NLM_F_DUMP)
