"""Every place minirun keeps state. The state root is on tmpfs (/run) so it dies at reboot with the
namespaces and links it describes."""

from __future__ import annotations

import os

try:  # CPython's own SHA-256 (3.12+: _sha2, 3.11: _sha256); hashlib's default loads OpenSSL first (~4 ms)
    from _sha2 import sha256 as _sha256  # type: ignore[import-not-found]
except ImportError:
    try:
        from _sha256 import sha256 as _sha256  # type: ignore[import-not-found,no-redef]
    except ImportError:
        from hashlib import sha256 as _sha256  # type: ignore[assignment]

STATE_DIR_ENV = "MINIRUN_STATE_DIR"
DEFAULT_STATE_DIR = "/run/minirun"


def state_root() -> str:
    return os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR


# Images outlive reboots (unlike the state root), as Docker's /var/lib/docker does.
DATA_DIR_ENV = "MINIRUN_DATA_DIR"
DEFAULT_DATA_DIR = "/var/lib/minirun"


def data_root() -> str:
    return os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


def images_dir() -> str:
    return os.path.join(data_root(), "images")


def writable_root() -> str:
    """Where this state root's containers and pods keep what they write, on disk (as Docker's
    /var/lib/docker/overlay2 and /containers): upper dirs, /etc files, logs. Keyed by the state root, because
    one data root (its images) may serve several state roots, and the reconcile of one must never take
    another's files. Nothing here dies at reboot: a directory whose record (on the state root) is gone is
    an orphan, reclaimed by `reconcile.reconcile`."""
    key = _sha256(os.path.realpath(state_root()).encode()).hexdigest()[:16]
    return os.path.join(data_root(), "rw", key)


def container_data_dir(container_id: str) -> str:
    return os.path.join(writable_root(), "containers", container_id)


def container_log(container_id: str) -> str:
    """The newest log file; rotated ones are .1 (newer) to .N (oldest), as Docker's json-file names them."""
    return os.path.join(container_data_dir(container_id), f"{container_id}.log")


def pod_data_dir(pod_name: str) -> str:
    return os.path.join(writable_root(), "pods", pod_name)


def containers_dir() -> str:
    return os.path.join(state_root(), "containers")


def container_record(container_id: str) -> str:
    return os.path.join(containers_dir(), f"{container_id}.json")


def stopped_by_hand_mark(container_id: str) -> str:
    """Made by `stop` (and `kill` with a fatal signal): its restart policy rests until it is started again.
    A file beside the record, not a field in it: the record is the supervisor's to write."""
    return os.path.join(containers_dir(), f".{container_id}.stopped")


def damaged_lock() -> str:
    """Held while a damaged container record is rebuilt or its holdings are released (`gc --damaged -f`)."""
    return os.path.join(state_root(), "damaged.lock")


def supervisor_socket() -> str:
    return os.path.join(state_root(), "supervisor.sock")


def supervisor_lock() -> str:
    return os.path.join(state_root(), "supervisor.lock")


def owners_dir() -> str:
    return os.path.join(state_root(), "owners")


def names_dir() -> str:
    return os.path.join(state_root(), "names")


def name_claim(name: str) -> str:
    return os.path.join(names_dir(), name)


def ipam_dir(network: str) -> str:
    return os.path.join(state_root(), "ipam", network)


def start_lock() -> str:
    """Held while a created or exited container is started again (`start`, `restart`): two at once must not
    both take it from its record."""
    return os.path.join(state_root(), "start.lock")


def ports_lock() -> str:
    return os.path.join(state_root(), "ports.lock")


def firewall_lock() -> str:
    return os.path.join(state_root(), "firewall.lock")


def pods_dir() -> str:
    return os.path.join(state_root(), "pods")


def networks_dir() -> str:
    return os.path.join(state_root(), "networks")


def pod_record(name: str) -> str:
    return os.path.join(pods_dir(), f"{name}.json")


def pod_pin_dir(name: str) -> str:
    return os.path.join(pods_dir(), name)


def pods_lock() -> str:
    return os.path.join(state_root(), "pods.lock")


# `ip netns` looks here (iproute2's NETNS_RUN_DIR): a pod's netns pinned in it is one the seed's commands
# can use by name (`ip netns exec minirun-web ip addr`).
NETNS_DIR = "/run/netns"
NETNS_PREFIX = "minirun-"


def netns_pin(pod: str) -> str:
    return os.path.join(NETNS_DIR, f"{NETNS_PREFIX}{pod}")


def ipam_root() -> str:
    return os.path.join(state_root(), "ipam")


def hidden_from_containers() -> tuple[str, ...]:
    """What a container without an image must never see of the host: minirun's records, sockets, logs and
    images, and every netns pin (another container's network would be one setns away)."""
    return (state_root(), data_root(), NETNS_DIR)
