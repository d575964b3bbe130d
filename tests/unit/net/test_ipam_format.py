"""The on-disk format of IPAM's reservations, which only net/ipam.py reads and writes (issue 14). Running
containers keep their addresses across an upgrade only while the files written by an earlier minirun (and
by minirun-cni) stay readable, so the layout is pinned here byte for byte:

    <root>/<network>/<IPv4 address>   "OWNER\\nIFNAME", mode 0600, created O_EXCL
    <root>/<network>/lock             the flock
    <root>/<network>/last_reserved    the last address handed out
"""

import ipaddress
import os
import stat
from pathlib import Path

import pytest

from minirun.net import ipam
from minirun.net.ipam import AddressStore, Allocator, Reservation, SubnetExhausted

NET = ipaddress.IPv4Network("10.77.0.0/29")  # .1 gateway, .2-.6 usable
GW = ipaddress.IPv4Address("10.77.0.1")


def test_a_reservation_is_one_file_named_by_its_address(tmp_path: Path):
    store = AddressStore(str(tmp_path / "minirun"), Allocator(NET, GW))
    assert str(store.reserve("0123456789ab")) == "10.77.0.2"
    assert store.claim(ipaddress.IPv4Address("10.77.0.5"), "cni:c1:net1", "net1")
    directory = tmp_path / "minirun"
    assert sorted(os.listdir(directory)) == ["10.77.0.2", "10.77.0.5", "last_reserved", "lock"]
    assert (directory / "10.77.0.2").read_bytes() == b"0123456789ab\neth0"
    assert (directory / "10.77.0.5").read_bytes() == b"cni:c1:net1\nnet1"
    assert stat.S_IMODE((directory / "10.77.0.2").stat().st_mode) == 0o600
    assert (directory / "last_reserved").read_text() == "10.77.0.2"  # a claim is not a round-robin step


def _written_by_an_earlier_minirun(root: Path) -> None:
    """A state root as minirun and minirun-cni left it before issue 14, with the odd files it may hold."""
    net = root / "minirun"
    net.mkdir(parents=True)
    (net / "10.77.0.2").write_text("0123456789ab\neth0")
    (net / "10.77.0.3").write_text("cni:c1:net1\nnet1")
    (net / "10.77.0.4").write_text("oldowner")  # no interface named
    (net / "lock").write_text("")
    (net / "last_reserved").write_text("10.77.0.4")
    (net / ".last_reserved.tmp").write_text("10.77.0.3")  # a writer killed before its rename
    (root / "empty").mkdir()


def test_every_reservation_is_read_back(tmp_path: Path):
    _written_by_an_earlier_minirun(tmp_path)
    assert ipam.all_reservations(str(tmp_path)) == {
        "minirun": {
            "10.77.0.2": Reservation("0123456789ab", "eth0"),
            "10.77.0.3": Reservation("cni:c1:net1", "net1"),
            "10.77.0.4": Reservation("oldowner", ""),
        }
    }  # a network without reservations is left out
    assert ipam.all_reservations(str(tmp_path / "missing")) == {}
    store = AddressStore(str(tmp_path / "minirun"))
    assert store.owner_of("10.77.0.3") == "cni:c1:net1" and store.owner_of("10.77.0.6") is None


def test_allocation_continues_on_files_an_earlier_minirun_wrote(tmp_path: Path):
    _written_by_an_earlier_minirun(tmp_path)
    store = AddressStore(str(tmp_path / "minirun"), Allocator(NET, GW))
    assert str(store.reserve("new")) == "10.77.0.5"  # after last_reserved, skipping every held address
    assert str(store.reserve("newer")) == "10.77.0.6"
    with pytest.raises(SubnetExhausted):
        store.reserve("one too many")
    assert not store.release("10.77.0.4", "someone else")  # released only for its owner
    assert store.release("10.77.0.4", "oldowner")
    assert str(store.reserve("last", "eth1")) == "10.77.0.4"
    assert (tmp_path / "minirun" / "10.77.0.4").read_bytes() == b"last\neth1"
