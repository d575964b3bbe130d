import struct

import pytest

from minirun.net import dns


def query(name: str, qtype: int = dns.TYPE_A, ident: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, dns.CLASS_IN)


def test_parse_and_answer_a():
    q = dns.parse_query(query("DB.example"))
    assert (q.ident, q.name, q.qtype) == (0x1234, "db.example", dns.TYPE_A)
    reply = dns.build_response(q, ["10.78.0.2", "10.78.0.3"])
    ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", reply)
    assert (ident, qd, an, ns, ar) == (0x1234, 1, 2, 0, 0)
    assert flags & 0x8000 and flags & 0x0100 and flags & 0xF == dns.NOERROR
    assert reply.endswith(bytes([10, 78, 0, 3]))
    assert reply[12 : 12 + len(q.question)] == q.question


def test_nxdomain_and_aaaa_have_no_answers():
    reply = dns.build_response(dns.parse_query(query("nope")), [], dns.NXDOMAIN)
    assert struct.unpack_from("!HH", reply, 2)[0] & 0xF == dns.NXDOMAIN
    aaaa = dns.build_response(dns.parse_query(query("db", dns.TYPE_AAAA)), ["10.78.0.2"])
    assert struct.unpack_from("!HHHH", aaaa)[3] == 0


@pytest.mark.parametrize("packet", [b"", b"\0" * 5, query("x")[:-2], struct.pack("!HHHHHH", 1, 0x8000, 1, 0, 0, 0)])
def test_malformed_queries_are_rejected(packet):
    with pytest.raises(ValueError):
        dns.parse_query(packet)
