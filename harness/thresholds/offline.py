"""Pure logic of ``faultline calibrate``: a rule's ``<expr> <op> <scalar>``, Prometheus's
``for`` semantics replayed offline, false positives, TTD, and the recommendation.

Recorded data is the left-hand side of the rule, evaluated by the real
Prometheus every ``step`` seconds over each window (``query_range``), one
series per label set. A candidate (threshold, ``for``) is replayed exactly as
the rule manager evaluates an alert: at each evaluation where the series has
a sample and ``value <op> threshold`` holds, the alert is pending from the
first such evaluation (``activeAt``) and firing once ``t - activeAt >= for``;
an evaluation where it does not hold (or without a sample) resets it.

Margin. A threshold is *safe* when no baseline evaluation fires it and it
lies beyond the baseline's worst value by at least ``margin`` times the
baseline's worst excursion from its median (``|worst - median|``, at least
0.1 % of the median): with margin 1, a ``>`` threshold is at least
``worst + (worst - median)``.

Recommendation: among safe candidates, those detecting the most fault
intensities within ``max_ttd``, and of those the ones whose mean TTD is within
``TTD_SLACK`` (one evaluation) of the fastest; then the threshold farthest from
the baseline; then the longer ``for``. The threshold nearest the baseline is
often the fastest by a second, and fires on the first noisier baseline; one
nearly as fast but farther out is crossed as quickly by the fault and leaves
the baseline room.
"""

from __future__ import annotations

import math
import operator
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from harness.errors import ConfigError

__all__ = [
    "OPS",
    "TTD_SLACK",
    "Candidate",
    "Evaluation",
    "Window",
    "candidate_thresholds",
    "evaluate",
    "firing_mask",
    "firing_times",
    "margin_limit",
    "recommend",
    "split_expr",
]

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_TAIL = re.compile(r"^(?P<lhs>.*?)\s*(?P<op>>=|<=|>|<)\s*(?P<thr>" + _NUMBER + r")\s*$", re.S)

# Mean TTDs this close count as equally fast: the rule is evaluated once a second.
TTD_SLACK = 1.0

Samples = Sequence[tuple[float, float | None]]  # (t, value or None: no sample)


def split_expr(expr: str, *, rule: str) -> tuple[str, str, float]:
    """``"histogram_quantile(...) > 0.72"`` -> (lhs, ">", 0.72); ConfigError naming the
    rule when the expression is not ``<expr> <op> <scalar>`` at its top level."""
    text = " ".join(expr.split())
    m = _TAIL.match(text)
    problem = None
    if m is None:
        problem = "does not end in a comparison with a number"
    else:
        lhs = m.group("lhs")
        depth = 0
        for ch in lhs:
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth < 0:
                break
        if depth != 0 or not lhs:
            problem = "the comparison is not at the top level"
        elif re.search(r"\b(and|or|unless)\b|bool\s*$", lhs):
            problem = "the left-hand side has a set operator or bool"
    if problem is not None or m is None:
        raise ConfigError(
            f"rule {rule}.expr",
            f"{text!r}: {problem}",
            expected="<expression> <op> <number> with op one of > >= < <=",
        )
    return m.group("lhs"), m.group("op"), float(m.group("thr"))


def firing_mask(samples: Samples, op: str, threshold: float, for_s: float) -> list[bool]:
    """Per evaluation: is an alert ``lhs <op> threshold`` with ``for: for_s`` firing?
    (Prometheus's rule manager replayed.)"""
    cond = OPS[op]
    active_at: float | None = None
    out = []
    for t, v in samples:
        if v is None or math.isnan(v) or not cond(v, threshold):
            active_at = None
            out.append(False)
            continue
        if active_at is None:
            active_at = t
        out.append(t - active_at >= for_s - 1e-9)
    return out


def firing_times(samples: Samples, op: str, threshold: float, for_s: float) -> list[float]:
    """Evaluation times at which the alert starts firing, one per episode."""
    mask = firing_mask(samples, op, threshold, for_s)
    return [
        t
        for i, ((t, _), on) in enumerate(zip(samples, mask, strict=True))
        if on and not (i and mask[i - 1])
    ]


@dataclass(frozen=True)
class Window:
    """One recorded window: a baseline (``intensity`` None) or a fault at an intensity,
    injected at ``injected`` (timeline seconds); ``series`` per label set."""

    label: str
    intensity: float | None
    injected: float | None
    series: Mapping[tuple[tuple[str, str], ...], Samples]

    def values(self) -> list[float]:
        return [v for s in self.series.values() for _, v in s if v is not None and math.isfinite(v)]


@dataclass(frozen=True)
class Candidate:
    threshold: float
    for_s: float


@dataclass(frozen=True)
class Evaluation:
    candidate: Candidate
    false_positives: int  # firing episodes over all baseline windows
    safe: bool  # no false positive and beyond the margin
    ttd: dict[str, float | None]  # fault window label -> TTD (None: not within max_ttd)

    @property
    def detected(self) -> int:
        return sum(v is not None for v in self.ttd.values())

    @property
    def mean_ttd(self) -> float:
        got = [v for v in self.ttd.values() if v is not None]
        return statistics.fmean(got) if got else math.inf


def _baseline_bounds(baseline: Sequence[Window], op: str) -> tuple[float, float]:
    values = [v for w in baseline for v in w.values()]
    if not values:
        raise ConfigError("calibrate.baseline", "no sample of the rule's expression recorded")
    worst = max(values) if op in (">", ">=") else min(values)
    return statistics.median(values), worst


def margin_limit(baseline: Sequence[Window], op: str, margin: float) -> float:
    """The least a ``>`` threshold may be (the most, for ``<``) under ``margin``."""
    median, worst = _baseline_bounds(baseline, op)
    excursion = max(abs(worst - median), 1e-3 * abs(median))
    return worst + margin * excursion if op in (">", ">=") else worst - margin * excursion


def candidate_thresholds(
    baseline: Sequence[Window], faults: Sequence[Window], op: str, *, points: int = 40
) -> list[float]:
    """A geometric grid of distances from the baseline's median towards the faults'
    extreme, as thresholds rounded to two significant digits of the distance."""
    median, _ = _baseline_bounds(baseline, op)
    upward = op in (">", ">=")
    fault_values = [v for w in faults for v in w.values()]
    extreme = (max if upward else min)(fault_values, default=median)
    span = abs(extreme - median)
    if span == 0:
        span = max(abs(median), 1.0)
    out = set()
    for i in range(points):
        d = span * 10 ** (-3 + 3 * i / (points - 1))
        digits = -math.floor(math.log10(d)) + 1
        out.add(round(median + d if upward else median - d, digits))
    return sorted(out)


def evaluate(
    candidate: Candidate,
    baseline: Sequence[Window],
    faults: Sequence[Window],
    op: str,
    *,
    limit: float,
    max_ttd: float,
) -> Evaluation:
    """False positives on the baselines and TTD per fault window of one candidate."""
    fp = sum(
        len(firing_times(s, op, candidate.threshold, candidate.for_s))
        for w in baseline
        for s in w.series.values()
    )
    beyond = candidate.threshold >= limit if op in (">", ">=") else candidate.threshold <= limit
    ttd: dict[str, float | None] = {}
    for w in faults:
        t0 = w.injected if w.injected is not None else 0.0
        firsts = [
            t - t0
            for s in w.series.values()
            for t in firing_times(s, op, candidate.threshold, candidate.for_s)
            if t >= t0
        ]
        first = min(firsts, default=None)
        ttd[w.label] = first if first is not None and first <= max_ttd else None
    return Evaluation(candidate, fp, fp == 0 and beyond, ttd)


def recommend(evaluations: Sequence[Evaluation], op: str) -> Evaluation | None:
    """The best safe candidate (see the module docstring); None if none is safe and
    detects anything."""
    safe = [e for e in evaluations if e.safe and e.detected]
    if not safe:
        return None
    most = max(e.detected for e in safe)
    best = min(e.mean_ttd for e in safe if e.detected == most)
    fast = [e for e in safe if e.detected == most and e.mean_ttd <= best + TTD_SLACK + 1e-9]
    sign = 1.0 if op in (">", ">=") else -1.0
    return max(fast, key=lambda e: (sign * e.candidate.threshold, e.candidate.for_s))
