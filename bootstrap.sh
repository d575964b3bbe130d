#!/usr/bin/env bash
# Set up minirun on Debian 12 (as root) and run the demo or the test suite.
#   ./bootstrap.sh demo   Debian packages + virtualenv + minirun, then the demo (examples/03-...)
#   ./bootstrap.sh test   the same plus the test tools, then the whole test suite
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

mode=${1:-}
case "$mode" in demo|test) ;; *) echo "usage: $0 demo|test" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "bootstrap.sh: run as root (minirun creates namespaces, links and nft rules)" >&2; exit 1; }

# nftables: NAT; iproute2: the demo's and tests' own `ip` commands; python3-venv/-dev, gcc, libcap-dev:
# building python-prctl in the virtualenv; busybox-static: the busybox image and the examples; tini: --init;
# libseccomp2: the containers' seccomp filter.
packages=(nftables iproute2 python3 python3-venv python3-dev gcc libcap-dev busybox-static procps util-linux tini libseccomp2)
# test mode: the real CNI callers tests/integration/test_cni_runtimes.py drives (Podman 4.3, containerd 1.6 + runc,
# the reference CNI plugins), and Debian's Go + libcni to build cnitool from Debian's source package.
if [ "$mode" = test ]; then
  packages+=(podman containerd runc containernetworking-plugins golang-go golang-github-appc-cni-dev)
fi
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap.sh: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's own interpreter, not whatever `python3` is first on PATH (a pyenv shim costs ~100 ms a start):
# the `minirun` script's shebang then names the venv's interpreter directly.
if [ ! -x .venv/bin/python ]; then /usr/bin/python3 -m venv .venv; fi
extra=""; [ "$mode" = test ] && extra="[test]"
# compat mode: a plain path entry instead of an import hook (the hook alone costs ~7 ms per start).
.venv/bin/pip install -q --disable-pip-version-check -e ".${extra}" --config-settings editable_mode=compat
# An editable install is compiled on first import only, and never where PYTHONDONTWRITEBYTECODE is set:
# compile now, or every start pays ~20 ms to compile minirun again.
.venv/bin/python -m compileall -q minirun >/dev/null
if [ "$mode" = test ]; then
  # The CRI client the tests generate from containerd's api.proto; then cnitool and that client are built
  # from Debian's source packages into /var/cache/minirun-tests now, while apt can reach the mirror (the
  # tests run in a namespace with no route out; they build them there too, through the machine's namespace).
  .venv/bin/pip install -q --disable-pip-version-check grpcio grpcio-tools
  .venv/bin/python -m tests.cni_runtimes.tools || echo "bootstrap.sh: could not build cnitool / the CRI client yet" >&2
fi
ln -sf "$PWD/.venv/bin/minirun" /usr/local/bin/minirun

if [ "$mode" = demo ]; then
  exec ./examples/03-mini-container-network.sh
fi
# The root tests move themselves into a throwaway network + mount namespace (tests/conftest.py).
set +e
.venv/bin/python -m pytest "${@:2}"
status=$?
[ $status -eq 5 ] && { echo "bootstrap.sh: no tests were collected" >&2; exit 1; }
exit $status
