"""Plans of Steps: run in order, undone in reverse, every failure named."""

import contextlib

import pytest

from minirun.errors import StepError
from minirun.plan import Step, run_plan


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
