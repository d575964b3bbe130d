#!/usr/bin/env bash
# minirun's main demo: one container on the minirun0 bridge shows its eth0 and routes, then reaches an
# "outside" host through NAT. The outside host is a network namespace this script creates on a TEST-NET
# address (198.51.100.0/24), so no packet ever leaves the machine.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
OUTSIDE=minirun-demo-outside
UPLINK=mrdemo0
ip netns delete "$OUTSIDE" 2>/dev/null || true
ip link delete "$UPLINK" 2>/dev/null || true
CLEANUP+=("ip netns delete $OUTSIDE" "ip link delete $UPLINK")

echo "### 1. an 'outside' host: netns $OUTSIDE at 198.51.100.2, reached from this host's $UPLINK (198.51.100.1)"
ip netns add "$OUTSIDE"
ip link add "$UPLINK" type veth peer name eth0 netns "$OUTSIDE"
ip addr add 198.51.100.1/24 dev "$UPLINK"
ip link set "$UPLINK" up
ip -n "$OUTSIDE" addr add 198.51.100.2/24 dev eth0
ip -n "$OUTSIDE" link set eth0 up
ip -n "$OUTSIDE" link set lo up
# A one-request server that tells the caller which source address it saw.
ip netns exec "$OUTSIDE" /usr/bin/python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.51.100.2", 8080)); s.listen(1); s.settimeout(30)
c, peer = s.accept(); c.recv(100)
c.sendall(f"hello from 198.51.100.2: you reached me from {peer[0]}\n".encode()); c.close()' &
server=$!
CLEANUP+=("kill $server")
sleep 0.3

echo
echo "### 2. minirun run: a container on the minirun0 bridge"
"$MINIRUN" run --explain --name demo sh -c '
echo "--- inside: hostname $(hostname), PID $$"
echo "--- ip addr show eth0"; ip addr show eth0
echo "--- ip route"; ip route
echo "--- connecting to 198.51.100.2:8080 (outside this container, beyond the host)"
/usr/bin/python3 -c "
import socket
c = socket.create_connection((\"198.51.100.2\", 8080), timeout=5); c.sendall(b\"hi\")
print(c.recv(200).decode(), end=\"\")"
echo "--- the outside saw the host address 198.51.100.1, not ours: that is masquerade NAT"'
wait "$server" 2>/dev/null || true

echo
echo "### 3. what stays on the host (like docker0): the bridge, its gateway address and one NAT rule"
ip -br addr show minirun0
nft list table inet minirun
echo
echo "### 4. and what does not: no veth, no address record, no container record is left"
ip -br link show type veth | grep -v "$UPLINK" || echo "(no container veth left)"
echo "demo done."
