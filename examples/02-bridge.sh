#!/usr/bin/env bash
# Seed, "Linux Bridges": a bridge joins several namespaces at layer 2, like a switch.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

step "1. three containers on the minirun0 bridge"
ids=()
for n in c1 c2 c3; do
  ids+=("$($MINIRUN run -d --name "br-$n" sleep 60)")
  CLEANUP+=("$MINIRUN rm -f br-$n")
done
addr() { $MINIRUN inspect -f '{{.NetworkSettings.IPAddress}}' "$1"; }
say "each container's host-side veth is a port of minirun0 (the seed's 'bridge link show')"
show bridge link show master minirun0
show ip -br addr show minirun0

step "2. every container reaches the others through the bridge"
for from in c1 c2 c3; do
  for to in c1 c2 c3; do
    [ "$from" = "$to" ] && continue
    target=$(addr "br-$to")
    echo "\$ minirun exec br-$from busybox ping -c 1 $target   # br-$to"
    $MINIRUN exec "br-$from" busybox ping -c 1 -W 2 "$target" | tail -n 2
  done
done
say "the bridge learned their MACs, as a switch does:"
show bridge fdb show br minirun0 dynamic
