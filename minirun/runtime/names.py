"""Generated container names, Docker-style: adjective_scientist."""

from __future__ import annotations

_ADJECTIVES = (
    "brave",
    "calm",
    "eager",
    "fond",
    "gentle",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "merry",
    "nifty",
    "proud",
    "quirky",
    "sharp",
    "tender",
    "vivid",
    "wise",
    "zen",
)
_PEOPLE = (
    "bell",
    "cerf",
    "curie",
    "dijkstra",
    "hopper",
    "kahn",
    "knuth",
    "lamport",
    "lovelace",
    "metcalfe",
    "noether",
    "perlman",
    "postel",
    "ritchie",
    "shannon",
    "thompson",
    "torvalds",
    "turing",
)


def generate(container_id: str) -> str:
    """A readable name derived from the id, with the id's first hex digits to keep it unique in practice."""
    value = int(container_id, 16)
    adjective = _ADJECTIVES[value % len(_ADJECTIVES)]
    person = _PEOPLE[(value // len(_ADJECTIVES)) % len(_PEOPLE)]
    return f"{adjective}_{person}_{container_id[:4]}"
