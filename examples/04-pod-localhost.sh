#!/usr/bin/env bash
# Seed, "Pod Network Namespace": containers of one pod share one network namespace, so they talk over
# localhost - a server bound to 127.0.0.1 is reachable from its pod mates and from no one else.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLEANUP+=("$MINIRUN pod rm -f web")

step "1. a server member of pod web, listening on 127.0.0.1:8080 only"
show $MINIRUN run -d --pod web --name web-server python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 8080)); s.listen(4)
while True:
    c, _ = s.accept(); c.sendall(b"hello over localhost, from the pod mate\n"); c.close()'
sleep 0.5
show ip netns exec minirun-web ss -ltn

step "2. a second member fetches from localhost:8080"
show $MINIRUN run --rm --pod web --name web-sidecar python3 -c '
import socket; print(socket.create_connection(("localhost", 8080), timeout=5).recv(100).decode(), end="")'

step "3. a container outside the pod cannot: the port is bound to the pod's loopback"
pod_ip=$($MINIRUN pod inspect web | python3 -c 'import json,sys; print(json.load(sys.stdin)["IPAddress"])')
if $MINIRUN run --rm python3 -c "import socket; socket.create_connection(('$pod_ip', 8080), timeout=3)" 2>/dev/null; then
  echo "unexpected: reached the pod's loopback from outside"; exit 1
fi
say "refused at $pod_ip:8080, as in Kubernetes: localhost is per pod, not per container"
