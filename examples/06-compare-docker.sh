#!/usr/bin/env bash
# The same probe under Docker and under minirun: interfaces, routes, hostname, PID 1.
# Exits 77 (skipped) when no Docker engine runs here.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PROBE='echo "hostname: $(hostname)"; echo "pid: $$"; ip -br addr; ip route'

if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
  echo "skipped: no Docker engine here (install docker.io and start it to compare)"
  exit 77
fi
step "docker run --rm busybox"
docker run --rm busybox sh -c "$PROBE"
step "minirun run"
$MINIRUN run sh -c "$PROBE"
say "the same shape: lo + eth0 with a private address, a default route via the bridge's gateway, PID 1"
say "(Docker sets the FORWARD policy to DROP; minirun adds its accepts to DOCKER-USER, see the README)"
