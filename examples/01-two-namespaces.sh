#!/usr/bin/env bash
# Seed, Part 1 "Connect Two Namespaces": two isolated network stacks that reach each other.
# The seed wires red and blue with one veth pair; minirun gives each its own veth to the minirun0 bridge,
# which is how Docker and CNI connect them. The pods are named netns, so the seed's `ip netns` commands work.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

step "1. two network namespaces (pods): red and blue"
for ns in red blue; do
  show $MINIRUN pod create "$ns" >/dev/null
  CLEANUP+=("$MINIRUN pod rm -f $ns")
done
show ip netns list
red=$($MINIRUN pod inspect red | python3 -c 'import json,sys; print(json.load(sys.stdin)["IPAddress"])')
blue=$($MINIRUN pod inspect blue | python3 -c 'import json,sys; print(json.load(sys.stdin)["IPAddress"])')
say "each has its own stack: its own lo, eth0, address, routes"
show ip netns exec minirun-red ip -br addr
show ip netns exec minirun-blue ip -br addr

step "2. red pings blue ($blue), blue pings red ($red)"
show ip netns exec minirun-red busybox ping -c 2 -W 2 "$blue"
show ip netns exec minirun-blue busybox ping -c 2 -W 2 "$red"
say "works: two isolated stacks, connected by veth pairs through the minirun0 bridge"
