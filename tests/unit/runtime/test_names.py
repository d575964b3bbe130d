"""Generated container names (Docker-style adjective_person)."""

import re

from minirun.runtime.model import new_container_id
from minirun.runtime.names import generate
from minirun.spec import validate_name


def test_generated_names_are_valid_and_deterministic():
    """A generated name is claimed like --name: it must pass spec.validate_name, be stable per id, and use
    every adjective x person pair (a collapsed table would fail). The old test checked neither."""
    table = [f"{n:012x}" for n in range(18 * 18)]  # value n -> adjective n % 18, person n // 18
    for container_id in [*table, "ffffffffffff", *(new_container_id() for _ in range(200))]:
        name = generate(container_id)
        assert validate_name(name) == name and generate(container_id) == name
        assert re.fullmatch(r"[a-z]+_[a-z]+_[0-9a-f]{4}", name) and name.endswith(f"_{container_id[:4]}")
    assert generate("0123456789ab") == "merry_perlman_0123"  # 0x0123456789ab: % 18 = 9, // 18 % 18 = 11
    assert len({generate(c).rsplit("_", 1)[0] for c in table}) == 18 * 18
