# Shared by the examples: which minirun to run, a step printer, and a cleanup list run on exit.
MINIRUN=${MINIRUN:-minirun}
CLEANUP=()
cleanup() { for ((i=${#CLEANUP[@]}-1; i>=0; i--)); do eval "${CLEANUP[i]}" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT
step() { printf '\n### %s\n' "$*"; }
say() { printf '    # %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
