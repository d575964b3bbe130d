"""Name resolution on user networks, answered by the supervisor (Podman's aardvark-dns, Docker's 127.0.0.11).

One UDP socket per user network on its gateway address, port 53; containers on that network get a
resolv.conf naming it. A name is looked up in the live records at query time, so a container started
after the querier resolves too: a container's name and hostname, a pod's name and hostname, a pod
member's name (-> the pod's address). Only names on the network the query arrived on are answered; the
default network has no resolver (as Docker's default bridge). Other names are forwarded to the host's
resolvers (the nameservers of the host's resolv.conf, as Docker's embedded DNS does), except on
--internal networks and when MINIRUN_DNS_FORWARD=0 (the test suite sets it: no query of its own may
leave the machine); MINIRUN_DNS_UPSTREAM names another resolv.conf to take the upstreams from.

Never an open resolver (issue 12, hole 7): a network's resolver answers only queries that arrive on its
own bridge from its own subnet. The firewall drops the others before they reach the socket
(net/firewall.py render_dns_guard); the server checks again, on every packet, the arrival interface
(IP_PKTINFO) and the source address. IP_PKTINFO rather than SO_BINDTODEVICE: a bound device is pinned by
its ifindex at bind time, so a bridge deleted and made again would silently cut the network off its
resolver, while the per-packet check compares against the bridge's name and needs no rebinding.
Its work is bounded: forwarding runs on a fixed pool of threads behind a bounded queue (a query that finds
it full is answered SERVFAIL at once), each upstream gets a timeout, and no exception here ends the
supervisor, which serves every network's names.

Docker's embedded DNS server: https://docs.docker.com/engine/network/#dns-services
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
import sys
import threading
import time
from collections import deque

from minirun.net import dns
from minirun.net import network as netdefs
from minirun.runtime import model, store

DNS_PORT = 53


def lookup(network_name: str, name: str) -> list[str]:
    """Addresses for `name` among the live containers and pods of `network_name`."""

    name = name.rstrip(".").lower()
    found: list[str] = []
    pod_addresses: dict[str, str] = {}
    for pod in store.all_pods():
        network = pod.get("network") or {}
        if network.get("name") != network_name or not model.is_ready(pod):
            continue
        address = network["address"].split("/")[0]
        pod_addresses[pod["name"]] = address
        if name in (pod["name"], str(pod.get("hostname", "")).lower()):
            found.append(address)
    for record in store.all_records():
        if record.get("status") != model.ContainerStatus.RUNNING:
            continue
        if record.get("pod") in pod_addresses:
            address = pod_addresses[record["pod"]]
        elif (record.get("network") or {}).get("name") == network_name:
            address = record["network"]["address"].split("/")[0]
        else:
            continue
        if name in (str(record.get("name", "")).lower(), str(record.get("hostname", "")).lower(), record["id"]):
            found.append(address)
    return list(dict.fromkeys(found))


FORWARD_ENV = "MINIRUN_DNS_FORWARD"
UPSTREAM_ENV = "MINIRUN_DNS_UPSTREAM"
FORWARD_TIMEOUT = 2.0


# systemd-resolved's stub (127.0.0.53) in /etc/resolv.conf: its real upstreams are listed here.
RESOLVED_UPSTREAMS = "/run/systemd/resolve/resolv.conf"


def _nameservers(path: str) -> list[str]:
    try:
        with open(path) as f:
            return [p[1] for p in (line.split() for line in f) if len(p) >= 2 and p[0] == "nameserver"]
    except OSError:
        return []


def upstreams() -> list[str]:
    """Where names minirun does not know are forwarded: the host's nameservers (loopback ones are the
    host's own stub, which answers on the host only: then systemd-resolved's upstream list is used)."""
    if os.environ.get(FORWARD_ENV) == "0":
        return []
    found = [s for s in _nameservers(os.environ.get(UPSTREAM_ENV) or "/etc/resolv.conf") if not s.startswith("127.")]
    if not found and not os.environ.get(UPSTREAM_ENV):
        found = [s for s in _nameservers(RESOLVED_UPSTREAMS) if not s.startswith("127.")]
    return found


def answer(network_name: str, packet: bytes) -> bytes | None:
    """The reply to `packet`, or None when it must be forwarded upstream."""
    try:
        query = dns.parse_query(packet)
    except ValueError:
        return dns.error_response(packet, dns.FORMERR)
    if query.qclass != dns.CLASS_IN:
        return dns.build_response(query, [], dns.NOTIMP)
    addresses = lookup(network_name, query.name)
    if addresses:
        return dns.build_response(query, addresses)
    network = netdefs.load(network_name)
    if network is not None and not network.internal and upstreams():
        return None
    return dns.build_response(query, [], dns.NXDOMAIN)


MAX_UPSTREAMS = 3  # resolv.conf's MAXNS: a query ties a worker up for at most MAX_UPSTREAMS * FORWARD_TIMEOUT
FORWARD_WORKERS = 4  # threads that wait on upstreams: the whole of the resolver's concurrency
FORWARD_QUEUE = 64  # queries waiting for a worker; one more is answered SERVFAIL at once
PER_NETWORK_QUEUE = 16  # of those, at most this many from one network
PER_NETWORK_WORKERS = 2  # and at most this many workers on one network's queries at a time
# The socket's queue: what waits there is answered in order, so under a flood its size is the delay a
# local name sees (the kernel's default, ~200 KiB, held ~270 queries: over 100 ms of work). The kernel
# drops the excess, as a busy DNS server does; clients ask again.
RECEIVE_BUFFER = 32 * 1024  # the kernel doubles it for its bookkeeping (socket(7))
THREAD_RETRY = 5.0  # seconds before trying again to make a forwarding thread the kernel refused
BATCH = 64  # datagrams served per wake-up of the supervisor's loop
LOG_INTERVAL = 10.0  # seconds between two log lines about refused queries (a container cannot flood the log)

# struct in_pktinfo { int ipi_ifindex; struct in_addr ipi_spec_dst; struct in_addr ipi_addr; } (ip(7))
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_PKTINFO = struct.Struct("=i4s4s")


def forward(packet: bytes, reply_to, sock: socket.socket) -> None:
    """Ask the upstreams in turn, each with its own timeout; relay the first answer, else SERVFAIL."""
    ident = packet[:2]
    for server in upstreams()[:MAX_UPSTREAMS]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as upstream:
            upstream.settimeout(FORWARD_TIMEOUT)
            try:
                upstream.connect((server, DNS_PORT))  # connected: only that server's datagrams come back
                upstream.send(packet)
                reply = upstream.recv(65535)
            except OSError:
                continue
        if reply[:2] != ident:
            continue
        with contextlib.suppress(OSError):
            sock.sendto(reply, reply_to)
        return
    with contextlib.suppress(OSError):
        sock.sendto(dns.error_response(packet, dns.SERVFAIL), reply_to)


class Forwarder:
    """A fixed pool of FORWARD_WORKERS threads behind at most FORWARD_QUEUE waiting queries: however many
    queries arrive, the resolver never holds more threads or more waiting queries than that. Shared by
    every network, fairly: one network holds at most PER_NETWORK_QUEUE waiting queries and at most
    PER_NETWORK_WORKERS of the workers, and the workers take the networks in turn, so a network flooding
    an upstream that never answers cannot starve the others' forwarding."""

    def __init__(
        self,
        workers: int = FORWARD_WORKERS,
        depth: int = FORWARD_QUEUE,
        per_network_depth: int = PER_NETWORK_QUEUE,
        per_network_workers: int = PER_NETWORK_WORKERS,
    ) -> None:
        self.wanted = workers
        self.depth = depth
        self.per_network_depth = per_network_depth
        self.per_network_workers = per_network_workers
        self.ready = threading.Condition()
        self.waiting: dict[str, deque] = {}  # network -> its queries, oldest first
        self.busy: dict[str, int] = {}  # network -> workers on its queries now
        self.turn: deque[str] = deque()  # the networks in the order the workers serve them
        self.workers: list[threading.Thread] = []
        self.retry_at = 0.0  # after a thread could not be made, when to try again
        # Workers never print (a fork of the supervisor while one holds stderr's lock would inherit it
        # held): what they have to say is logged by the serving thread.
        self.messages: deque[str] = deque(maxlen=20)

    def submit(self, packet: bytes, reply_to, sock: socket.socket, network: str = "") -> bool:
        """Queue a query for forwarding; False when it cannot be (its network's share or the pool is full,
        or no thread could start)."""
        self._start_workers()
        if not self.workers:
            return False
        with self.ready:
            queued = self.waiting.setdefault(network, deque())
            total = sum(len(q) for q in self.waiting.values())
            if total >= self.depth or len(queued) >= self.per_network_depth:
                return False
            queued.append((packet, reply_to, sock))
            if network not in self.turn:
                self.turn.append(network)
            self.ready.notify()
        return True

    def _take(self) -> tuple[str, tuple] | None:
        """The next query in turn whose network has a worker to spare (call holding `ready`)."""
        for _ in range(len(self.turn)):
            network = self.turn[0]
            self.turn.rotate(-1)
            queued = self.waiting.get(network)
            if queued and self.busy.get(network, 0) < self.per_network_workers:
                job = queued.popleft()
                if not queued:
                    del self.waiting[network]
                    self.turn.remove(network)
                self.busy[network] = self.busy.get(network, 0) + 1
                return network, job
        return None

    def _start_workers(self) -> None:
        if len(self.workers) >= self.wanted or time.monotonic() < self.retry_at:
            return
        while len(self.workers) < self.wanted:
            worker = threading.Thread(target=self._work, name="dns-forward", daemon=True)
            try:
                worker.start()
            except RuntimeError as exc:  # "can't start new thread": run with the ones we have, try again later
                self.retry_at = time.monotonic() + THREAD_RETRY
                self.messages.append(f"DNS forwarding runs with {len(self.workers)} thread(s) for now: {exc}")
                return
            self.workers.append(worker)

    def _work(self) -> None:
        while True:
            with self.ready:
                while (taken := self._take()) is None:
                    self.ready.wait()
            network, (packet, reply_to, sock) = taken
            try:
                forward(packet, reply_to, sock)
            except Exception as exc:  # noqa: BLE001 - one bad query must not take a worker with it
                self.messages.append(f"DNS forwarding failed: {type(exc).__name__}: {exc}")
            finally:
                with self.ready:
                    self.busy[network] -= 1
                    if not self.busy[network]:
                        del self.busy[network]
                    self.ready.notify_all()  # a network held back by its share may go on now


class Resolver:
    """The supervisor's DNS sockets, kept in step with the user networks. No method raises: a failure is
    logged and costs at most the query (or the network) it concerns, never the supervisor."""

    def __init__(self) -> None:
        self.sockets: dict[str, socket.socket] = {}
        self.networks: dict[str, netdefs.Network] = {}
        self.forwarder = Forwarder()
        self.refused = 0
        self.last_refusal = ""
        self.logged_at = 0.0

    def sync(self, on_close) -> list[tuple[socket.socket, str]]:
        """Open sockets for new networks, close those of removed ones (after `on_close(sock)`); returns the
        newly opened ones."""
        opened: list[tuple[socket.socket, str]] = []
        try:
            wanted = {n.name: n for n in netdefs.user_networks()}
        except Exception as exc:  # noqa: BLE001 - an unreadable record: keep serving what we serve
            self._log(f"cannot list the user networks: {type(exc).__name__}: {exc}")
            return opened
        for name in list(self.sockets):
            if name not in wanted or wanted[name] != self.networks.get(name):
                sock = self.sockets.pop(name)
                self.networks.pop(name, None)
                with contextlib.suppress(Exception):
                    on_close(sock)
                sock.close()
        for name, network in wanted.items():
            if name in self.sockets:
                continue
            try:
                sock = self._open(network)
            except OSError:  # its bridge is not there (yet), or out of descriptors: try again on the next sync
                continue
            self.sockets[name] = sock
            self.networks[name] = network
            opened.append((sock, name))
        return opened

    @staticmethod
    def _open(network: netdefs.Network) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.setblocking(False)  # serve_one reads until nothing waits
            sock.bind((str(network.gateway), DNS_PORT))
        except OSError:
            sock.close()
            raise
        return sock

    def missing(self) -> list[str]:
        """User networks whose gateway:53 could not be bound yet."""
        try:
            return [n.name for n in netdefs.user_networks() if n.name not in self.sockets]
        except Exception:  # noqa: BLE001 - as in sync
            return []

    def serve_one(self, sock: socket.socket, network_name: str) -> None:
        """Answer, forward or refuse what waits on `sock`: up to BATCH datagrams, so that a flood does not
        pay the supervisor's whole loop per query, nor starve its other work. Never raises."""
        for _ in range(BATCH):
            try:
                if not self._serve_one(sock, network_name):
                    break
            except Exception as exc:  # noqa: BLE001 - the supervisor serves every network: one query must not end it
                self._log(f"DNS query on {network_name} failed: {type(exc).__name__}: {exc}")
        while self.forwarder.messages:
            self._log(self.forwarder.messages.popleft())

    def _serve_one(self, sock: socket.socket, network_name: str) -> bool:
        """One datagram; False when none was waiting."""
        try:
            packet, ancillary, _flags, peer = sock.recvmsg(4096, socket.CMSG_SPACE(_PKTINFO.size))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True  # an error queued on the socket (ICMP from a querier that went away): next one
        self._handle(sock, network_name, packet, ancillary, peer)
        return True

    def _handle(self, sock: socket.socket, network_name: str, packet: bytes, ancillary: list, peer: tuple) -> None:
        network = self.networks.get(network_name)
        if network is None:
            return
        if not self._from_own_network(network, ancillary, peer):
            return  # no answer at all: to the querier this resolver does not exist
        reply = answer(network_name, packet)
        if reply is None:
            # Upstreams may be slow: never block the supervisor's loop on them; never queue without bound.
            if self.forwarder.submit(packet, peer, sock, network_name):
                return
            reply = dns.error_response(packet, dns.SERVFAIL)
        with contextlib.suppress(OSError):
            sock.sendto(reply, peer)

    def _from_own_network(self, network: netdefs.Network, ancillary: list, peer: tuple) -> bool:
        """The query arrived on the network's bridge, from an address in its subnet."""
        ifindex = next(
            (
                _PKTINFO.unpack_from(data)[0]
                for level, kind, data in ancillary
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _PKTINFO.size
            ),
            None,
        )
        try:
            arrived_on = socket.if_indextoname(ifindex) if ifindex else None
        except OSError:
            arrived_on = None
        if arrived_on == network.bridge and ipaddress.IPv4Address(peer[0]) in network.subnet:
            return True
        self.refused += 1
        self.last_refusal = f"{peer[0]} via {arrived_on or f'ifindex {ifindex}'}"
        now = time.monotonic()
        if now - self.logged_at >= LOG_INTERVAL:
            self.logged_at = now
            self._log(
                f"refused {self.refused} DNS quer{'y' if self.refused == 1 else 'ies'} for network {network.name} "
                f"from outside it (last: {self.last_refusal}); it answers only {network.subnet} on {network.bridge}"
            )
            self.refused = 0
        return False

    @staticmethod
    def _log(message: str) -> None:
        with contextlib.suppress(Exception):
            print(f"minirun supervisor: {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        self.networks.clear()


def in_use() -> bool:
    """Whether any live container or pod sits on a user network (then the resolver must keep running).
    When that cannot be told, it is: stopping would take DNS from every network."""

    try:
        users = [r.get("network") for r in store.all_records() if r.get("status") == model.ContainerStatus.RUNNING]
        users += [p.get("network") for p in store.all_pods()]
        return any(u and u.get("name") != netdefs.DEFAULT_NETWORK for u in users)
    except Exception:  # noqa: BLE001
        return True
