#!/usr/bin/env bash
# A container of its own: the busybox image as /, Docker's /etc files, and what root inside may not do.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

step "build the busybox image (Debian's busybox-static, no registry)"
show $MINIRUN image build busybox
show $MINIRUN image ls

step "the image is /: an overlay over it, pivot_root, the host's tree gone"
show $MINIRUN run --rm --image busybox sh -c 'ls /; grep " / " /proc/self/mounts'

step "/etc/hostname, /etc/hosts and /etc/resolv.conf are generated for the container"
show $MINIRUN run --rm --image busybox --hostname web --add-host db:10.77.0.99 cat /etc/hosts

step "root in the container has Docker's 14 capabilities, no_new_privs and a seccomp filter"
show $MINIRUN run --rm --image busybox grep -E 'Cap(Eff|Bnd)|NoNewPrivs|Seccomp' /proc/self/status
say "CapEff a80425fb = CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE"
say "                  NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP (decode: capsh --decode=a80425fb)"

step "so it cannot rewire even its own network (no CAP_NET_ADMIN)..."
if $MINIRUN run --rm --image busybox ip link set eth0 mtu 1400; then
  echo "unexpected: the MTU changed" >&2; exit 1
fi
step "...unless given it, and then only inside its own netns"
show $MINIRUN run --rm --image busybox --cap-add NET_ADMIN sh -c 'ip link set eth0 mtu 1400 && ip link show eth0'
say "the host side of the veth kept its MTU: the container changed only its own network namespace"

step "as a user: no capabilities left at all"
show $MINIRUN run --rm --image busybox --user 1000 sh -c 'id; grep CapEff /proc/self/status'
echo "images demo done."
