"""Every place minirun keeps state. The state root is on tmpfs (/run) so it dies at reboot with the
namespaces and links it describes."""

from __future__ import annotations

import os

STATE_DIR_ENV = "MINIRUN_STATE_DIR"
DEFAULT_STATE_DIR = "/run/minirun"


def state_root() -> str:
    return os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR


def containers_dir() -> str:
    return os.path.join(state_root(), "containers")


def container_record(container_id: str) -> str:
    return os.path.join(containers_dir(), f"{container_id}.json")


def logs_dir() -> str:
    return os.path.join(state_root(), "logs")


def container_log(container_id: str) -> str:
    return os.path.join(logs_dir(), f"{container_id}.log")


def supervisor_socket() -> str:
    return os.path.join(state_root(), "supervisor.sock")


def supervisor_lock() -> str:
    return os.path.join(state_root(), "supervisor.lock")


def names_dir() -> str:
    return os.path.join(state_root(), "names")


def name_claim(name: str) -> str:
    return os.path.join(names_dir(), name)


def ipam_dir(network: str) -> str:
    return os.path.join(state_root(), "ipam", network)


def firewall_lock() -> str:
    return os.path.join(state_root(), "firewall.lock")


def ipam_root() -> str:
    return os.path.join(state_root(), "ipam")
