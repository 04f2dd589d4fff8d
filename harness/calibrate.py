"""Alert-threshold calibration: which rule fired on which fault, how fast, and did it clear.

Seed 002 §2.5 ("stress before and after"): before trusting an alert, run a
baseline and then one fault window per mechanism, and read for every rule:
did it fire on the baseline (a false positive)? under which fault did it
fire, after how long (TTD)? did it resolve after the fault was reverted
(TTR)? These are pure functions of a :class:`~harness.timeline.Timeline`:
``alert.pending`` / ``alert.firing`` / ``alert.resolved`` events (one
episode per label set, as :class:`~harness.observe.prom.AlertWatcher` writes
them) and the ``fault.injected`` / ``fault.reverted`` events of the faults.

>>> windows = fault_windows(tl, {"cpu_throttle": ["cpu-squeeze"]})     # doctest: +SKIP
>>> table = calibrate(tl, rules=["OrderdLatencyP99High"], baseline=(0, 10), windows=windows)
>>> print(table.render())                                              # doctest: +SKIP
>>> checks = calibration_checks(table, [Expectation("OrderdLatencyP99High", "cpu_throttle",
...                                                 max_ttd=15, max_ttr=20)])  # doctest: +SKIP

Window semantics. A mechanism's window starts at its first injection and is
observed until the next window starts (the last one: until the end of the
timeline); ``reverted`` is when its last fault (the fault itself, or the
mitigation that ends it) was reverted. A firing that started before the
injection and still fires at it is *carried over* from an earlier window and
is not counted as a detection of this one. A rule that lags its cause may
fire after the revert, before the next window: that still counts for this
window (its TTD is then longer than the fault lasted).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from harness.checks import CheckResult, Figure, Status
from harness.errors import ConfigError
from harness.timeline import Event, Timeline

__all__ = [
    "CalibrationTable",
    "Expectation",
    "FaultWindow",
    "RuleRow",
    "WindowResult",
    "calibrate",
    "calibration_checks",
    "fault_windows",
    "firing_intervals",
    "validate_expectations",
]

Interval = tuple[float, float]  # [start, end); end is +inf while still firing


@dataclass(frozen=True)
class FaultWindow:
    """One mechanism's fault: injected at ``injected``, ended at ``reverted`` (None: never)."""

    mechanism: str
    injected: float
    reverted: float | None


@dataclass(frozen=True)
class Expectation:
    """``rule`` must fire within ``max_ttd`` s of ``mechanism``'s injection and, when
    ``max_ttr`` is given, resolve within ``max_ttr`` s of its revert."""

    rule: str
    mechanism: str
    max_ttd: float
    max_ttr: float | None = None


@dataclass(frozen=True)
class WindowResult:
    """One rule in one fault window (seconds; None where it did not happen)."""

    mechanism: str
    ttp: float | None  # injection -> first pending
    ttd: float | None  # injection -> first firing
    ttr: float | None  # revert -> resolved (0.0: resolved before the revert; None: never)
    carried: bool  # already firing at the injection, from an earlier cause

    @property
    def fired(self) -> bool:
        return self.ttd is not None


@dataclass(frozen=True)
class RuleRow:
    rule: str
    baseline_firings: int  # firing episodes overlapping the baseline: false positives
    baseline_pending: int  # pending that never reached firing there: near misses
    windows: tuple[WindowResult, ...]

    def result(self, mechanism: str) -> WindowResult | None:
        return next((w for w in self.windows if w.mechanism == mechanism), None)

    @property
    def fired_under(self) -> list[str]:
        return [w.mechanism for w in self.windows if w.fired]


@dataclass(frozen=True)
class CalibrationTable:
    baseline: tuple[float, float]
    windows: tuple[FaultWindow, ...]
    rows: tuple[RuleRow, ...]

    def row(self, rule: str) -> RuleRow | None:
        return next((r for r in self.rows if r.rule == rule), None)

    def to_figures(self) -> dict[str, dict[str, float | None]]:
        """Rows for ``Incident.figure``, in seconds: ``FP`` (firings on the baseline),
        ``TTD <mechanism>`` (None: did not fire there) and ``TTR`` (after the first
        window the rule fired in; None: never resolved). Keys sort in that order."""
        out: dict[str, dict[str, float | None]] = {}
        for r in self.rows:
            row: dict[str, float | None] = {"FP": float(r.baseline_firings)}
            for w in r.windows:
                row[f"TTD {w.mechanism}"] = _round(w.ttd)
            first = next((w for w in r.windows if w.fired), None)
            row["TTR"] = None if first is None else _round(first.ttr)
            out[r.rule] = row
        return out

    def render(self, expectations: Sequence[Expectation] = ()) -> str:
        """A plain-text table: one line per rule, one column per mechanism.

        Cells: ``4.2s`` fired after 4.2 s (``*`` marks an expected firing),
        ``pend`` pending only, ``carry`` still firing from an earlier window,
        ``-`` quiet. TTR is for the first window the rule fired in (``never``:
        still firing at the end).
        """
        expected = {(e.rule, e.mechanism) for e in expectations}
        mechs = [w.mechanism for w in self.windows]
        head = ["rule", "baseline", *mechs, "TTR"]
        lines = [head]
        for r in self.rows:
            cells = [r.rule, _baseline_cell(r)]
            for w in r.windows:
                cells.append(_window_cell(w, (r.rule, w.mechanism) in expected))
            first = next((w for w in r.windows if w.fired), None)
            if first is None:
                cells.append("-")
            else:
                cells.append("never" if first.ttr is None else f"{first.ttr:.1f}s")
            lines.append(cells)
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in lines
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _baseline_cell(r: RuleRow) -> str:
    if r.baseline_firings:
        return f"FIRED x{r.baseline_firings}"
    return "pend" if r.baseline_pending else "-"


def _window_cell(w: WindowResult, expected: bool) -> str:
    mark = "*" if expected else ""
    if w.fired and w.ttd is not None:
        return f"{w.ttd:.1f}s{mark}"
    if w.carried:
        return "carry" + mark
    if w.ttp is not None:
        return "pend" + mark
    return "MISSING" if expected else "-"


def fault_windows(timeline: Timeline, mechanisms: Mapping[str, Sequence[str]]) -> list[FaultWindow]:
    """One window per mechanism whose faults (by fault name) were injected, in time order.

    A mechanism may be several faults (a fault, then the mitigation that ends it):
    the window runs from the first injection to the last revert, and is open
    (``reverted`` None) while any of them was not reverted.
    """
    out: list[FaultWindow] = []
    for mechanism, faults in mechanisms.items():
        starts: list[float] = []
        ends: list[float | None] = []
        for fault in faults:
            injected = timeline.events("fault.injected", fault)
            if not injected:
                continue
            t0 = injected[0].t
            starts.append(t0)
            reverted = [e.t for e in timeline.events("fault.reverted", fault) if e.t >= t0]
            ends.append(reverted[0] if reverted else None)
        if not starts:
            continue
        end = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
        out.append(FaultWindow(mechanism, min(starts), end))
    return sorted(out, key=lambda w: w.injected)


def _labels_key(e: Event) -> tuple[tuple[str, str], ...]:
    labels = e.detail.get("labels") or {}
    return tuple(sorted((str(k), str(v)) for k, v in labels.items()))


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def firing_intervals(timeline: Timeline, rule: str) -> list[Interval]:
    """When ``rule`` was firing for at least one label set: merged [firing, resolved)
    intervals, the last one ending at +inf while still firing.

    Each label set (e.g. each etcd member) is its own episode; a resolve of one
    member does not end another member's firing.
    """
    open_: dict[tuple[tuple[str, str], ...], float] = {}
    raw: list[Interval] = []
    for e in timeline.events(name=rule):
        key = _labels_key(e)
        if e.kind == "alert.firing" and key not in open_:
            open_[key] = e.t
        elif e.kind == "alert.resolved" and key in open_:
            raw.append((open_.pop(key), e.t))
    raw += [(t, math.inf) for t in open_.values()]
    return _merge(raw)


def _window_result(
    window: FaultWindow,
    until: float,
    firing: Sequence[Interval],
    pending: Sequence[float],
) -> WindowResult:
    start = window.injected
    carried = any(a < start < b for a, b in firing)
    mine = [(a, b) for a, b in firing if start <= a < until]
    ttd = None if not mine else mine[0][0] - start
    pend = [t for t in pending if start <= t < until]
    ttp = None if not pend else pend[0] - start
    ttr: float | None = None
    if window.reverted is not None and mine:
        # Firing at the revert, or starting after it (the rule lags its cause):
        # recovered when the last of those episodes resolved.
        after = [b for _, b in mine if b > window.reverted]
        if not after:
            ttr = 0.0
        elif math.isfinite(after[-1]):
            ttr = after[-1] - window.reverted
    return WindowResult(window.mechanism, ttp, ttd, ttr, carried)


def calibrate(
    timeline: Timeline,
    *,
    rules: Sequence[str],
    baseline: tuple[float, float],
    windows: Sequence[FaultWindow],
) -> CalibrationTable:
    """The calibration table of ``rules`` over a baseline and fault windows (see module doc)."""
    lo, hi = baseline
    if hi < lo:
        raise ConfigError(
            "calibrate.baseline", f"{baseline!r}", expected="(start, end), start<=end"
        )
    ordered = sorted(windows, key=lambda w: w.injected)
    ends = [w.injected for w in ordered[1:]] + [math.inf]
    rows = []
    for rule in rules:
        firing = firing_intervals(timeline, rule)
        pending = [e.t for e in timeline.events("alert.pending", rule)]
        base_fired = [(a, b) for a, b in firing if a <= hi and b >= lo]
        # Near misses: pending in the baseline without a firing there from that pending on.
        near_misses = [
            t for t in pending if lo <= t <= hi and not any(t <= a <= hi for a, _ in firing)
        ]
        rows.append(
            RuleRow(
                rule,
                len(base_fired),
                len(near_misses),
                tuple(
                    _window_result(w, until, firing, pending)
                    for w, until in zip(ordered, ends, strict=True)
                ),
            )
        )
    return CalibrationTable((lo, hi), tuple(ordered), tuple(rows))


def validate_expectations(
    expectations: Sequence[Expectation], *, rules: Iterable[str], mechanisms: Iterable[str]
) -> None:
    """ConfigError (naming the field) for an expectation on an unknown rule or mechanism,
    a non-positive budget, or a duplicate; call before anything is started."""
    known_rules, known_mechs = set(rules), set(mechanisms)
    seen: set[tuple[str, str]] = set()
    for i, e in enumerate(expectations):
        where = f"expectations[{i}]"
        if e.rule not in known_rules:
            raise ConfigError(
                f"{where}.rule",
                f"unknown alert rule {e.rule!r}",
                expected=", ".join(sorted(known_rules)),
            )
        if e.mechanism not in known_mechs:
            raise ConfigError(
                f"{where}.mechanism",
                f"unknown mechanism {e.mechanism!r}",
                expected=", ".join(sorted(known_mechs)),
            )
        for name in ("max_ttd", "max_ttr"):
            value = getattr(e, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ConfigError(f"{where}.{name}", f"{value!r}", expected="a positive number")
        if (e.rule, e.mechanism) in seen:
            raise ConfigError(where, f"{e.rule} under {e.mechanism} listed twice")
        seen.add((e.rule, e.mechanism))


def calibration_checks(
    table: CalibrationTable, expectations: Sequence[Expectation], *, scale: float = 1.0
) -> list[CheckResult]:
    """Checks of a calibration: no rule fired on the baseline; each expected rule fired
    within its (scaled) TTD budget after its mechanism's injection, and resolved within
    its TTR budget after the revert. Missing windows or rules are UNKNOWN."""
    offenders = [r.rule for r in table.rows if r.baseline_firings]
    lo, hi = table.baseline
    results = [
        CheckResult(
            "baseline_quiet:every_rule",
            Status.FAILED if offenders else Status.PASSED,
            (
                f"fired on the baseline (false positives): {', '.join(offenders)}"
                if offenders
                else f"none of {len(table.rows)} rules fired in {hi - lo:.1f}s of baseline"
            ),
            {"rules": float(len(table.rows)), "fired": float(len(offenders))},
        )
    ]
    if not table.rows:
        results[0] = CheckResult("baseline_quiet:every_rule", Status.UNKNOWN, "no rules loaded")
    for e in expectations:
        results += _expectation_checks(table, e, scale)
    return results


def _expectation_checks(table: CalibrationTable, e: Expectation, scale: float) -> list[CheckResult]:
    label = f"{e.rule}@{e.mechanism}"
    row = table.row(e.rule)
    result = None if row is None else row.result(e.mechanism)
    if row is None or result is None:
        why = "rule not loaded" if row is None else f"mechanism {e.mechanism!r} never injected"
        out = [CheckResult(f"fires_within:{label}", Status.UNKNOWN, why)]
        if e.max_ttr is not None:
            out.append(CheckResult(f"resolves_within:{label}", Status.UNKNOWN, why))
        return out
    ttd_budget = e.max_ttd * scale
    figures: dict[str, Figure] = {
        "ttd_s": _round(result.ttd),
        "ttp_s": _round(result.ttp),
        "budget_s": ttd_budget,
    }
    if result.carried and not result.fired:
        fired = CheckResult(
            f"fires_within:{label}",
            Status.UNKNOWN,
            f"{e.rule} was still firing from an earlier window when {e.mechanism} was injected",
            figures,
        )
    elif result.ttd is None:
        seen = "" if result.ttp is None else f" (pending after {result.ttp:.1f}s)"
        fired = CheckResult(
            f"fires_within:{label}",
            Status.FAILED,
            f"{e.rule} never fired under {e.mechanism}{seen}",
            figures,
        )
    else:
        ok = result.ttd <= ttd_budget
        fired = CheckResult(
            f"fires_within:{label}",
            Status.PASSED if ok else Status.FAILED,
            f"{e.rule} fired {result.ttd:.2f}s after {e.mechanism} "
            + (f"(budget {ttd_budget:.1f}s)" if ok else f"over budget {ttd_budget:.1f}s"),
            figures,
        )
    out = [fired]
    if e.max_ttr is None:
        return out
    ttr_budget = e.max_ttr * scale
    window = next(w for w in table.windows if w.mechanism == e.mechanism)
    ttr_figs: dict[str, Figure] = {"ttr_s": _round(result.ttr), "budget_s": ttr_budget}
    name = f"resolves_within:{label}"
    if not result.fired:
        out.append(CheckResult(name, Status.UNKNOWN, f"{e.rule} never fired: nothing to resolve"))
    elif window.reverted is None:
        out.append(CheckResult(name, Status.UNKNOWN, f"{e.mechanism} was never reverted"))
    elif result.ttr is None:
        out.append(
            CheckResult(name, Status.FAILED, f"{e.rule} still firing after the revert", ttr_figs)
        )
    else:
        ok = result.ttr <= ttr_budget
        out.append(
            CheckResult(
                name,
                Status.PASSED if ok else Status.FAILED,
                f"{e.rule} resolved {result.ttr:.2f}s after {e.mechanism} was reverted "
                + (f"(budget {ttr_budget:.1f}s)" if ok else f"over budget {ttr_budget:.1f}s"),
                ttr_figs,
            )
        )
    return out
