"""Name resolution on user networks, answered by the supervisor (Podman's aardvark-dns, Docker's 127.0.0.11).

One UDP socket per user network on its gateway address, port 53; containers on that network get a
resolv.conf naming it. A name is looked up in the live records at query time, so a container started
after the querier resolves too: a container's name and hostname, a pod's name and hostname, a pod
member's name (-> the pod's address). Only names on the network the query arrived on are answered; the
default network has no resolver (as Docker's default bridge). Other names are forwarded to the host's
resolvers (the nameservers of the host's resolv.conf, as Docker's embedded DNS does), except on
--internal networks and when MINIRUN_DNS_FORWARD=0 (the test suite sets it: no query of its own may
leave the machine); MINIRUN_DNS_UPSTREAM names another resolv.conf to take the upstreams from.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

from minirun.net import dns
from minirun.net import network as netdefs
from minirun.runtime import state

DNS_PORT = 53


def lookup(network_name: str, name: str) -> list[str]:
    """Addresses for `name` among the live containers and pods of `network_name`."""
    from minirun.runtime import pod as pods

    name = name.rstrip(".").lower()
    found: list[str] = []
    pod_addresses: dict[str, str] = {}
    for pod in pods.all_pods():
        network = pod.get("network") or {}
        if network.get("name") != network_name or pod.get("status") != "ready":
            continue
        address = network["address"].split("/")[0]
        pod_addresses[pod["name"]] = address
        if name in (pod["name"], str(pod.get("hostname", "")).lower()):
            found.append(address)
    for record in state.all_records():
        if record.get("status") != "running":
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


def forward(packet: bytes, reply_to, sock: socket.socket) -> None:
    """Ask the upstreams in turn; relay the first answer. Runs in its own short-lived thread."""
    for server in upstreams():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as upstream:
            upstream.settimeout(FORWARD_TIMEOUT)
            try:
                upstream.sendto(packet, (server, DNS_PORT))
                reply, _ = upstream.recvfrom(65535)
            except OSError:
                continue
        with contextlib.suppress(OSError):
            sock.sendto(reply, reply_to)
        return
    with contextlib.suppress(OSError):
        sock.sendto(dns.error_response(packet, dns.SERVFAIL), reply_to)


class Resolver:
    """The supervisor's DNS sockets, kept in step with the user networks."""

    def __init__(self) -> None:
        self.sockets: dict[str, socket.socket] = {}

    def sync(self, on_close) -> list[tuple[socket.socket, str]]:
        """Open sockets for new networks, close those of removed ones (after `on_close(sock)`); returns the
        newly opened ones."""
        wanted = {n.name: n for n in netdefs.user_networks()}
        opened = []
        for name in list(self.sockets):
            if name not in wanted:
                sock = self.sockets.pop(name)
                on_close(sock)
                sock.close()
        for name, network in wanted.items():
            if name in self.sockets:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                sock.bind((str(network.gateway), DNS_PORT))
            except OSError:  # its bridge is not there (yet): try again on the next sync
                sock.close()
                continue
            self.sockets[name] = sock
            opened.append((sock, name))
        return opened

    def missing(self) -> list[str]:
        """User networks whose gateway:53 could not be bound yet."""
        return [n.name for n in netdefs.user_networks() if n.name not in self.sockets]

    def serve_one(self, sock: socket.socket, network_name: str) -> None:
        with contextlib.suppress(OSError):
            packet, peer = sock.recvfrom(4096)
            reply = answer(network_name, packet)
            if reply is None:
                # Upstreams may be slow: never block the supervisor's loop on them.
                threading.Thread(target=forward, args=(packet, peer, sock), daemon=True).start()
            else:
                sock.sendto(reply, peer)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()


def in_use() -> bool:
    """Whether any live container or pod sits on a user network (then the resolver must keep running)."""
    from minirun.runtime import pod as pods

    users = [r.get("network") for r in state.all_records() if r.get("status") == "running"]
    users += [p.get("network") for p in pods.all_pods()]
    return any(u and u.get("name") != netdefs.DEFAULT_NETWORK for u in users)
