"""faultline compare: the statistics (pure) and bad input (exit 2, nothing started)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness.compare.cli import CompareConfig
from harness.compare.stats import Budget, Repetition, compare, parse_budget, pool
from harness.errors import ConfigError


def _rep(ms: int, *, tail: int, n: int = 1000, failures: int = 0) -> Repetition:
    """n requests: 98 % at ``ms``, 2 % at ``tail`` (so P99 is ``tail``)."""
    fast = n * 98 // 100
    return Repetition(n, failures, 10.0, Counter({ms: fast, tail: n - fast}))


def test_a_clear_regression_is_one_and_identical_builds_are_ok() -> None:
    base = [_rep(2, tail=t) for t in (10, 10, 11, 10, 10)]
    slower = [_rep(3, tail=t) for t in (12, 12, 13, 12, 12)]  # +20 % P99
    budgets = {"p99": Budget(0.05)}
    by = {r.metric: r for r in compare(base, slower, budgets)}
    assert by["p99"].verdict == "regression"
    assert by["p99"].low is not None and by["p99"].low > 0.05
    assert by["p50"].verdict == "no budget"
    same = {r.metric: r for r in compare(base, list(reversed(base)), budgets)}
    assert same["p99"].verdict in ("ok", "inconclusive")  # never a regression
    assert same["p99"].change == 0.0


def test_one_noisy_repetition_does_not_make_a_regression() -> None:
    base = [_rep(2, tail=t) for t in (10, 11, 10, 12, 10)]
    cand = [_rep(2, tail=t) for t in (10, 11, 40, 10, 11)]  # one burst of other load
    (p99,) = compare(base, cand, {"p99": Budget(0.05)}, metrics=["p99"])
    assert p99.verdict != "regression"


def test_metrics_are_taken_over_the_pooled_requests_of_all_repetitions() -> None:
    # Per repetition P99 is 10 in four of five, but pooled the slowest 1 % are the 50 at 30.
    reps = [_rep(2, tail=10) for _ in range(4)] + [Repetition(1000, 0, 10.0, Counter({30: 1000}))]
    pooled = pool(reps)
    assert (pooled.requests, pooled.seconds, sum(pooled.hist.values())) == (5000, 50.0, 5000)
    base = [_rep(2, tail=10) for _ in range(5)]
    (p99,) = compare(base, reps, {}, metrics=["p99"])
    assert (p99.baseline, p99.candidate) == (10.0, 30.0)
    assert p99.change == pytest.approx(2.0)
    assert p99.verdict == "no budget"


def test_errors_are_compared_in_percentage_points_and_throughput_downward() -> None:
    base = [_rep(2, tail=10, failures=0) for _ in range(4)]
    worse = [Repetition(800, 40, 10.0, Counter({2: 784, 10: 16})) for _ in range(4)]
    by = {r.metric: r for r in compare(base, worse, {"errors": Budget(0.5), "rps": Budget(0.05)})}
    assert by["errors"].change == pytest.approx(5.0)  # 0 % -> 5 %
    assert by["errors"].verdict == "regression"
    assert by["rps"].change == pytest.approx(-0.2)
    assert by["rps"].verdict == "regression"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("p99=5%", ("p99", 0.05)), ("p50=0.1", ("p50", 0.1)), ("errors=0.5pp", ("errors", 0.5))],
)
def test_parse_budget(text: str, expected: tuple[str, float]) -> None:
    name, budget = parse_budget(text)
    assert (name, budget.limit) == expected


@pytest.mark.parametrize("text", ["p98=5%", "p99", "p99=five", "p99=-1%"])
def test_parse_budget_refuses_bad_input(text: str) -> None:
    with pytest.raises(ConfigError, match="--budget"):
        parse_budget(text)


def _faultline(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        env={"FAULTLINE_STATE_DIR": str(state), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/a", "/bin/true"], "BASELINE: '/nonexistent/a' is not an executable"),
        (["/bin/true", "/bin/true", "--repeat", "1"], "--repeat: 1"),
        (["/bin/true", "/bin/true", "--max-repeat", "5"], "--max-repeat: 5"),
        (["/bin/true", "/bin/true", "--max-repeat", "51"], "--max-repeat: 51"),
        (["/bin/true", "/bin/true", "--rate", "0"], "--rate: 0.0"),
        (["/bin/true", "/bin/true", "--arg={nope}"], "--arg: '{nope}' names ['nope']"),
        (["/bin/true", "/bin/true", "--budget", "p42=1%"], "--budget: 'p42=1%'"),
        (["/bin/true", "/bin/true", "--locustfile", "nope"], "--locustfile:"),
        (["a", "b", "--image"], "--image: images need a container backend"),
    ],
)
def test_compare_bad_input_exits_2_naming_the_flag_with_no_run_made(
    tmp_path: Path, args: list[str], message: str
) -> None:
    res = _faultline("compare", *args, state=tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("repeat", "max_repeat", "pairs"),
    [(9, None, 27), (20, None, 50), (9, 9, 9), (50, None, 50), (4, 10, 10)],
)
def test_compare_adds_pairs_up_to_three_times_repeat_unless_told(
    repeat: int, max_repeat: int | None, pairs: int
) -> None:
    cfg = CompareConfig("/bin/true", "/bin/true", repeat=repeat, max_repeat=max_repeat)
    assert cfg.most_pairs == pairs
