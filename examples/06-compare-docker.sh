#!/usr/bin/env bash
# The same probe under Docker and under minirun: interfaces, routes, hostname, PID 1; then Docker's own
# busybox image imported into minirun, and the confinement each gives it.
# Exits 77 (skipped) when no Docker engine runs here.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PROBE='echo "hostname: $(hostname)"; echo "pid: $$"; ip -o addr; ip route'

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

step "Docker's busybox image, run by minirun"
docker save busybox | $MINIRUN image import - --name docker-busybox
CLEANUP+=("$MINIRUN image rm docker-busybox")
CONFINEMENT="grep -E 'Cap(Inh|Prm|Eff|Bnd)|NoNewPrivs|Seccomp:' /proc/self/status"
step "docker run --rm busybox: confinement"
docker run --rm busybox sh -c "$CONFINEMENT"
step "minirun run --rm --image docker-busybox: confinement"
$MINIRUN run --rm --image docker-busybox sh -c "$CONFINEMENT; $PROBE"
say "the same 14 capabilities (a80425fb) and seccomp; minirun adds no_new_privs (NoNewPrivs: 1)"
