"""Just enough DNS (RFC 1035) to answer A queries for container names: parse one question, build the answer.

Pure functions on bytes; the supervisor does the socket work (runtime/supervisor/resolver.py).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

TYPE_A = 1
TYPE_AAAA = 28
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4
TTL = 5  # seconds: containers come and go


class Query(NamedTuple):
    ident: int
    flags: int
    name: str
    qtype: int
    qclass: int
    question: bytes  # the raw question section, echoed in the answer


def parse_query(packet: bytes) -> Query:
    """Raises ValueError on anything that is not a single-question standard query."""
    if len(packet) < 12:
        raise ValueError("short packet")
    ident, flags, qdcount = struct.unpack_from("!HHH", packet)
    if flags & 0x8000 or (flags >> 11) & 0xF or qdcount != 1:
        raise ValueError("not a standard query with one question")
    offset, labels = 12, []
    while True:
        if offset >= len(packet):
            raise ValueError("truncated name")
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(packet[offset : offset + length].decode("ascii", "replace"))
        offset += length
    if offset + 4 > len(packet):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack_from("!HH", packet, offset)
    return Query(ident, flags, ".".join(labels).lower(), qtype, qclass, packet[12 : offset + 4])


def build_response(query: Query, addresses: list[str], rcode: int = NOERROR) -> bytes:
    """An authoritative answer with one A record per address (none for other types or unknown names)."""
    recursion_desired = query.flags & 0x0100
    flags = 0x8000 | 0x0400 | recursion_desired | rcode  # QR, AA
    answers = b""
    if rcode == NOERROR and query.qtype == TYPE_A:
        for address in addresses:
            # 0xC00C: a pointer to the name in the question, which starts right after the 12-byte header
            answers += struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + ipaddress.IPv4Address(address).packed
    count = len(addresses) if answers else 0
    header = struct.pack("!HHHHHH", query.ident, flags, 1, count, 0, 0)
    return header + query.question + answers


def error_response(packet: bytes, rcode: int) -> bytes:
    """FORMERR/NOTIMP for packets we cannot parse: echo the id, no sections."""
    ident = struct.unpack_from("!H", packet)[0] if len(packet) >= 2 else 0
    return struct.pack("!HHHHHH", ident, 0x8000 | rcode, 0, 0, 0, 0)
