"""Pure statistics of ``faultline compare``: per-metric confidence intervals and verdicts.

Each build was measured in ``n`` repetitions (load windows of equal rate and
length), paired: repetition ``i`` of the baseline ran at the same time as (or
right next to) repetition ``i`` of the candidate, so both saw the same state of
the machine. One repetition gives a :class:`Repetition`: its request count,
failures, seconds and bucketed response-time histogram.

A metric (P50, P99, error ratio, throughput) is taken over the *pooled*
requests of a build: its repetitions' histograms merged, failures and seconds
summed. So P99 over 9 repetitions of 500 requests is the 45th slowest of 4500,
not a median of nine 5th-slowest values, which jump with every scheduling
hiccup. The change is candidate / baseline - 1 (P50, P99, throughput) or
candidate - baseline in percentage points (error ratio). The 95 % confidence
interval is a percentile bootstrap over *pairs*: each of ``resamples`` rounds
draws ``n`` pairs with replacement, pools each build's repetitions of those
pairs and takes the change; the 2.5th and 97.5th percentiles bound it. Pairs
are the unit resampled because a pair is what the machine's state varies by:
a burst of other load that hit one build in one pair is left out of about a
third of the rounds, so it widens the interval instead of moving it beyond a
budget.

Verdict per metric with a budget (the largest change in the bad direction
that is acceptable):

* ``regression``: the whole interval is beyond the budget;
* ``ok``: the whole interval is within the budget;
* ``inconclusive``: the interval straddles it (more repetitions would tell).

>>> a = [Repetition(500, 0, 10.0, Counter({20: 490, 30: 10}))] * 3
>>> b = [Repetition(500, 0, 10.0, Counter({24: 490, 36: 10}))] * 3
>>> [r.verdict for r in compare(a, b, {"p99": Budget(0.05)}, metrics=["p99"])]
['regression']
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from harness.errors import ConfigError
from harness.load.stats import percentile

__all__ = [
    "METRICS",
    "Budget",
    "MetricResult",
    "Repetition",
    "compare",
    "parse_budget",
    "pool",
]


@dataclass(frozen=True)
class Repetition:
    """One load window against one build."""

    requests: int
    failures: int
    seconds: float
    hist: Counter[int]  # response time (ms, bucketed as locust does) -> count


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    higher_is_worse: bool
    relative: bool  # change as a ratio - 1; else as a difference
    one: Callable[[Repetition], float | None]  # the metric of one (or pooled) repetition


def _percentile(q: float) -> Callable[[Repetition], float | None]:
    return lambda r: percentile(r.hist, q)


def _error_pct(r: Repetition) -> float | None:
    return None if r.requests == 0 else 100.0 * r.failures / r.requests


def _throughput(r: Repetition) -> float | None:
    return None if r.seconds <= 0 else r.requests / r.seconds


METRICS: dict[str, Metric] = {
    "p50": Metric("p50", "ms", True, True, _percentile(0.50)),
    "p99": Metric("p99", "ms", True, True, _percentile(0.99)),
    "errors": Metric("errors", "%", True, False, _error_pct),
    "rps": Metric("rps", "req/s", False, True, _throughput),
}


@dataclass(frozen=True)
class Budget:
    """The largest acceptable change in the bad direction: a fraction for relative
    metrics (0.05 = 5 %), percentage points for the error ratio."""

    limit: float


def parse_budget(text: str, *, field: str = "--budget") -> tuple[str, Budget]:
    """``p99=5%`` / ``p50=0.1`` / ``errors=0.5pp`` / ``rps=10%`` -> (metric, Budget)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or name not in METRICS:
        raise ConfigError(
            field, f"{text!r}", expected=f"METRIC=LIMIT with METRIC one of {', '.join(METRICS)}"
        )
    raw = raw.strip()
    m = METRICS[name]
    try:
        if m.relative:
            limit = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
        else:
            limit = float(raw.removesuffix("pp"))
    except ValueError:
        unit = "a percentage (5%) or a fraction (0.05)" if m.relative else "percentage points"
        raise ConfigError(field, f"{text!r}: bad limit", expected=unit) from None
    if not math.isfinite(limit) or limit < 0:
        raise ConfigError(field, f"{text!r}: the limit must be >= 0")
    return name, Budget(limit)


@dataclass(frozen=True)
class MetricResult:
    metric: str
    unit: str
    baseline: float | None
    candidate: float | None
    change: float | None  # point estimate: ratio - 1, or difference (pp)
    low: float | None  # 95 % interval of the change
    high: float | None
    budget: float | None
    verdict: str  # regression | ok | inconclusive | no budget | no data

    def describe(self) -> str:
        def val(v: float | None) -> str:
            return "-" if v is None else f"{v:.4g}"

        rel = METRICS[self.metric].relative

        def chg(v: float | None) -> str:
            if v is None:
                return "-"
            return f"{100 * v:+.1f}%" if rel else f"{v:+.3f}pp"

        budget = "-" if self.budget is None else chg(self.budget).lstrip("+")
        return (
            f"{self.metric:<7} {val(self.baseline):>9} {val(self.candidate):>9} {self.unit:<6} "
            f"{chg(self.change):>9}  [{chg(self.low)}, {chg(self.high)}]  "
            f"budget {budget:<7} {self.verdict}"
        )


def pool(reps: Sequence[Repetition]) -> Repetition:
    """The repetitions as one: histograms merged, counts and seconds summed."""
    hist: Counter[int] = Counter()
    for r in reps:
        hist.update(r.hist)
    return Repetition(
        sum(r.requests for r in reps),
        sum(r.failures for r in reps),
        sum(r.seconds for r in reps),
        hist,
    )


def _change(m: Metric, a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if m.relative:
        return None if a <= 0 else b / a - 1.0
    return b - a


def _verdict(m: Metric, low: float, high: float, budget: Budget | None) -> str:
    if budget is None:
        return "no budget"
    # Changes in the bad direction are positive for higher-is-worse metrics.
    bad_low, bad_high = (low, high) if m.higher_is_worse else (-high, -low)
    if bad_low > budget.limit:
        return "regression"
    if bad_high <= budget.limit:
        return "ok"
    return "inconclusive"


def compare(
    baseline: Sequence[Repetition],
    candidate: Sequence[Repetition],
    budgets: Mapping[str, Budget],
    *,
    resamples: int = 2000,
    seed: int = 1,
    metrics: Sequence[str] = tuple(METRICS),
) -> list[MetricResult]:
    """One :class:`MetricResult` per metric over index-paired repetitions (see the
    module docstring)."""
    if not baseline or len(baseline) != len(candidate):
        raise ConfigError("compare", "each build needs the same number (>= 1) of repetitions")
    rng = random.Random(seed)
    n = len(baseline)
    a_all, b_all = pool(baseline), pool(candidate)
    draws: dict[str, list[float]] = {name: [] for name in metrics}
    for _ in range(resamples):
        picks = rng.choices(range(n), k=n)
        a, b = pool([baseline[i] for i in picks]), pool([candidate[i] for i in picks])
        for name in metrics:
            m = METRICS[name]
            c = _change(m, m.one(a), m.one(b))
            if c is not None:
                draws[name].append(c)
    out = []
    for name in metrics:
        m = METRICS[name]
        a_value, b_value = m.one(a_all), m.one(b_all)
        change = _change(m, a_value, b_value)
        got = sorted(draws[name])
        if change is None or not got:
            out.append(
                MetricResult(name, m.unit, a_value, b_value, None, None, None, None, "no data")
            )
            continue
        low = got[int(0.025 * (len(got) - 1))]
        high = got[math.ceil(0.975 * (len(got) - 1))]
        budget = budgets.get(name)
        out.append(
            MetricResult(
                name,
                m.unit,
                a_value,
                b_value,
                change,
                low,
                high,
                None if budget is None else budget.limit,
                _verdict(m, low, high, budget),
            )
        )
    return out
