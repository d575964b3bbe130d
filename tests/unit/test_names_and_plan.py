import contextlib
import re

import pytest

from minirun.errors import StepError
from minirun.net.links import host_veth_name, valid_ifname
from minirun.plan import Step, run_plan
from minirun.runtime.model import new_container_id
from minirun.runtime.names import generate
from minirun.spec import validate_name


def test_host_veth_name_is_stable_short_and_prefixed():
    name = host_veth_name("0123456789ab")
    assert name == host_veth_name("0123456789ab")
    assert name != host_veth_name("0123456789ac")
    assert name.startswith("veth") and len(name) == 12 and valid_ifname(name)
    int(name[4:], 16)


def test_valid_ifname_limits():
    assert valid_ifname("a" * 15)
    assert not valid_ifname("a" * 16)
    assert not valid_ifname("a/b") and not valid_ifname("") and not valid_ifname("a b")


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


def test_plan_undoes_in_reverse_and_names_the_failed_step():
    log = []

    def step(name, fail=False):
        def apply():
            if fail:
                raise OSError(5, "boom")
            log.append(f"do {name}")
            return lambda: log.append(f"undo {name}")

        return Step(name, apply)

    with pytest.raises(StepError, match=r"step 3/4 \(c\) failed: \[Errno 5\] boom"), contextlib.ExitStack() as undo:
        run_plan([step("a"), step("b"), step("c", fail=True), step("d")], undo)
    assert log == ["do a", "do b", "undo b", "undo a"]


def test_failed_undo_does_not_stop_the_others(capsys):
    log = []

    def bad_undo():
        raise RuntimeError("cannot")

    steps = [
        Step("a", lambda: lambda: log.append("undo a")),
        Step("b", lambda: bad_undo),
        Step("c", lambda: (_ for _ in ()).throw(ValueError("x"))),
    ]
    with pytest.raises(StepError), contextlib.ExitStack() as undo:
        run_plan(steps, undo)
    assert log == ["undo a"]
    assert "rollback of 'b' failed: cannot" in capsys.readouterr().err
