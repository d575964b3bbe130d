#!/usr/bin/env bash
# Seed, "Inspecting Pod Networking" / "Viewing Docker Networks": look at a running container from the
# inside and from the host, with the seed's own commands.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CLEANUP+=("$MINIRUN rm -f inspected" "$MINIRUN pod rm -f looked")

show $MINIRUN run -d --name inspected sleep 60
$MINIRUN run -d --pod looked --name looked-member sleep 60 >/dev/null

step "1. from inside (docker exec ... ip addr / ip route)"
show $MINIRUN exec inspected ip addr
show $MINIRUN exec inspected ip route

step "2. from the host, by PID (the seed's nsenter -t \$PID -n ip addr)"
pid=$($MINIRUN inspect -f '{{.State.Pid}}' inspected)
show nsenter -t "$pid" -n ip -br addr
sandbox=$($MINIRUN inspect -f '{{.NetworkSettings.SandboxKey}}' inspected)
show nsenter --net="$sandbox" ip route

step "3. a pod is a named netns: ip netns exec works on it"
show ip netns exec minirun-looked ip -br addr

step "4. the host side: veth ports of minirun0, and the whole picture"
show ip link show type veth
show bridge link show master minirun0
show $MINIRUN topology
