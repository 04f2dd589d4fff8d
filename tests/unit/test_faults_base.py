"""The Fault lifecycle on a real file: write-ahead ledger, revert on every exit path,
verification, composition, knob validation. No backend needed."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from harness.errors import ConfigError, FaultError, RevertError
from harness.faults import Fault, Scope, compose
from harness.run import Run


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run.open(tmp_path / "faultline-state", watchdog=False)
    yield r
    r.close()


class FileFault(Fault):
    """Writes ``bad`` into files (named with faultline, as inverses require)."""

    kind = "file"

    def __init__(
        self,
        scope: Scope,
        paths: list[Path],
        *,
        fail_at: int | None = None,
        leave: bool = False,
        max_duration: float = 30,
        name: str | None = None,
    ) -> None:
        super().__init__(scope, max_duration=max_duration, name=name)
        self.paths = paths
        self.fail_at = fail_at
        self.leave = leave  # the inverse restores a different file: the revert must notice
        self.ledger_at_mutation: list[Any] = []
        self.order: list[str] = []

    def knobs(self) -> dict[str, Any]:
        return {"files": len(self.paths)}

    def _prepare(self) -> None:
        self.targets = [p.name for p in self.paths]

    def _apply(self) -> None:
        for i, p in enumerate(self.paths):
            restore = p.with_suffix(".other") if self.leave else p
            inverse = {"op": "write_file", "path": str(restore), "value": p.read_text()}
            self._step(f"write {p.name}", inverse, partial(self._mutate, p, i))
        self.detail["achieved"] = 42

    def _mutate(self, p: Path, i: int) -> None:
        if i == self.fail_at:
            raise FaultError(f"cannot write {p.name}")
        self.ledger_at_mutation.append(self.scope.run.ledger.pending())
        p.write_text("bad")

    def _leftovers(self) -> list[str]:
        return [f"{p.name} is bad" for p in self.paths if p.read_text() == "bad"]


def files(tmp_path: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        p = tmp_path / f"faultline-{i}.txt"
        p.write_text(f"good {i}")
        out.append(p)
    return out


def test_ledger_entry_is_written_before_the_mutation(run: Run, tmp_path: Path) -> None:
    fault = FileFault(Scope(run), files(tmp_path, 2), max_duration=30)
    before = time.time()
    with fault:
        assert [p.read_text() for p in fault.paths] == ["bad", "bad"]
    first = fault.ledger_at_mutation[0]
    assert [e.action for e in first] == ["file: write faultline-0.txt"]
    assert first[0].deadline is not None and before + 29 < first[0].deadline < time.time() + 31
    assert [p.read_text() for p in fault.paths] == ["good 0", "good 1"]
    assert run.ledger.pending() == []


def test_timeline_events_carry_targets_knobs_and_figures(run: Run, tmp_path: Path) -> None:
    with FileFault(Scope(run), files(tmp_path, 1)):
        pass
    (inj,) = run.timeline.events("fault.injected", "file")
    (rev,) = run.timeline.events("fault.reverted", "file")
    assert inj.detail["targets"] == ["faultline-0.txt"]
    assert inj.detail["knobs"] == {"files": 1}
    assert inj.detail["achieved"] == 42
    assert rev.detail["leftovers"] == []
    assert rev.t >= inj.t


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_reverted_when_the_body_raises(run: Run, tmp_path: Path, exc: type[BaseException]) -> None:
    paths = files(tmp_path, 2)
    with pytest.raises(exc), FileFault(Scope(run), paths):
        raise exc()
    assert [p.read_text() for p in paths] == ["good 0", "good 1"]
    assert run.ledger.pending() == []


def test_a_partial_injection_is_undone(run: Run, tmp_path: Path) -> None:
    paths = files(tmp_path, 3)
    with pytest.raises(FaultError, match="faultline-1"):
        FileFault(Scope(run), paths, fail_at=1).inject()
    assert [p.read_text() for p in paths] == ["good 0", "good 1", "good 2"]
    assert run.ledger.pending() == []
    assert run.timeline.events("fault.injected") == []


def test_revert_verifies_and_names_what_is_left(run: Run, tmp_path: Path) -> None:
    fault = FileFault(Scope(run), files(tmp_path, 1), leave=True).inject()
    with pytest.raises(RevertError) as err:
        fault.revert()
    assert err.value.leftover == "faultline-0.txt is bad"
    (rev,) = run.timeline.events("fault.reverted")
    assert rev.detail["leftovers"] == ["faultline-0.txt is bad"]
    fault.revert()  # idempotent: nothing more is tried, nothing raised


def test_a_revert_error_never_hides_the_original_failure(run: Run, tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError, match="verdict") as err,
        FileFault(Scope(run), files(tmp_path, 1), leave=True),
    ):
        raise ValueError("verdict")
    assert any("faultline-0.txt is bad" in n for n in err.value.__notes__)


def test_compose_injects_in_order_and_reverts_in_reverse(run: Run, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = FileFault(Scope(run), files(tmp_path / "a", 1), name="a")
    b = FileFault(Scope(run), files(tmp_path / "b", 1), name="b")
    with compose(a, b):
        assert a.injected and b.injected
    kinds = [(e.kind, e.name) for e in run.timeline.events()]
    assert kinds == [
        ("fault.injected", "a"),
        ("fault.injected", "b"),
        ("fault.reverted", "b"),
        ("fault.reverted", "a"),
    ]


def test_compose_reverts_the_first_when_the_second_fails(run: Run, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = FileFault(Scope(run), files(tmp_path / "a", 1), name="a")
    b = FileFault(Scope(run), files(tmp_path / "b", 1), fail_at=0, name="b")
    with pytest.raises(FaultError), compose(a, b):
        pytest.fail("the body must not run")
    assert a.paths[0].read_text() == "good 0"
    assert run.ledger.pending() == []


def test_a_fault_is_injected_once(run: Run, tmp_path: Path) -> None:
    fault = FileFault(Scope(run), files(tmp_path, 1))
    with fault, pytest.raises(FaultError, match="injected once"):
        fault.inject()


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, 3601, "10", True, None])
def test_max_duration_must_be_positive_and_bounded(run: Run, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        FileFault(Scope(run), [], max_duration=value)  # type: ignore[arg-type]
    assert "file.max_duration" in str(err.value)


def test_compose_needs_a_fault() -> None:
    with pytest.raises(ConfigError, match="compose"):
        compose()
