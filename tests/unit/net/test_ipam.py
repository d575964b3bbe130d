import ipaddress
import multiprocessing

import pytest

from minirun.net.ipam import AddressStore, Allocator, Reservation, SubnetExhausted

NET = ipaddress.IPv4Network("10.77.0.0/29")  # .1 gateway, .2-.6 usable, .7 broadcast
GW = ipaddress.IPv4Address("10.77.0.1")


def test_candidates_skip_network_gateway_and_broadcast():
    got = [str(a) for a in Allocator(NET, GW).candidates(None)]
    assert got == ["10.77.0.2", "10.77.0.3", "10.77.0.4", "10.77.0.5", "10.77.0.6"]


def test_round_robin_starts_after_last_and_wraps():
    got = [str(a) for a in Allocator(NET, GW).candidates(ipaddress.IPv4Address("10.77.0.5"))]
    assert got == ["10.77.0.6", "10.77.0.2", "10.77.0.3", "10.77.0.4", "10.77.0.5"]


def test_next_free_skips_taken_and_exhausts():
    alloc = Allocator(NET, GW)
    assert str(alloc.next_free(None, {"10.77.0.2", "10.77.0.3"})) == "10.77.0.4"
    with pytest.raises(SubnetExhausted, match="no free address left in 10.77.0.0/29"):
        alloc.next_free(None, {f"10.77.0.{i}" for i in range(2, 7)})


def test_store_reserve_release_round_robin(tmp_path):
    store = AddressStore(str(tmp_path / "net"), Allocator(NET, GW))
    a = store.reserve("c1")
    b = store.reserve("c2")
    assert (str(a), str(b)) == ("10.77.0.2", "10.77.0.3")
    assert store.owner_of(a) == "c1"
    assert store.release(a, "someone-else") is False  # only the owner's record is released
    assert store.release(a, "c1") is True
    assert store.release(a, "c1") is False  # already free is fine
    # round robin: a just-released address is not handed out again straight away
    assert str(store.reserve("c3")) == "10.77.0.4"
    assert store.reservations() == {"10.77.0.3": Reservation("c2", "eth0"), "10.77.0.4": Reservation("c3", "eth0")}


def _reserve_many(directory: str, owner: str, count: int, out) -> None:
    store = AddressStore(directory, Allocator(ipaddress.IPv4Network("10.77.0.0/24"), GW))
    out.put([str(store.reserve(f"{owner}-{i}")) for i in range(count)])


def test_concurrent_processes_never_share_an_address(tmp_path):
    queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_reserve_many, args=(str(tmp_path), f"p{n}", 25, queue)) for n in range(4)]
    for p in procs:
        p.start()
    results = [addr for _ in procs for addr in queue.get(timeout=30)]
    for p in procs:
        p.join()
    assert len(results) == 100 and len(set(results)) == 100
