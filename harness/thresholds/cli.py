"""``faultline calibrate RULE_FILE --rule NAME``: a threshold and ``for:`` from measurements.

Seed 002 §2.5: compare the metric with and without the fault under identical
load, and set the threshold from the baseline's quantiles. faultline starts
etcd (3 members), Toxiproxy between orderd and etcd, orderd, a real
Prometheus with RULE_FILE, and a steady locust load; then, interleaved,
``--baseline-runs`` baseline windows and one fault window per intensity
(``etcd-latency``: every etcd response to orderd delayed by the intensity in
ms, +- ``--jitter``; near orderd's 1 s etcd timeout this makes 5xx). The
rule's left-hand side is read back from Prometheus per 1 s evaluation; every
candidate threshold x ``for:`` is replayed offline with Prometheus's ``for``
semantics (:mod:`harness.thresholds.offline`), and the recommendation is
written as an updated rule file plus a promtool test made from the recorded
raw series (run with promtool before it is reported). Then (unless
``--no-verify``) the written rule is loaded into a fresh Prometheus: it must
stay quiet on a fresh baseline window and fire within ``--max-ttd`` under the
weakest intensity at which it fired for at least half of that fault window.
Exit 0 verified, 1 not (or nothing safe to recommend), 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from harness.backends.base import Backend
from harness.components.etcd import EtcdCluster
from harness.components.orderd import OrderService
from harness.components.prometheus import Prometheus, ScrapeTarget
from harness.components.toxiproxy import Proxy, Toxiproxy
from harness.config import BACKENDS, IMPLEMENTED_BACKENDS
from harness.errors import ConfigError
from harness.faults import Latency, Scope, compose
from harness.load import MAX_RATE, LoadGenerator
from harness.pki import Pki
from harness.run import Run
from harness.thresholds.offline import (
    Candidate,
    Evaluation,
    Samples,
    Window,
    candidate_thresholds,
    evaluate,
    firing_mask,
    margin_limit,
    recommend,
)
from harness.thresholds.rulefile import (
    AlertRule,
    PromtoolCase,
    format_duration,
    format_threshold,
    load_rule,
    metric_names,
    parse_duration,
    promtool_test,
    run_promtool_test,
    write_rule_file,
)

__all__ = ["CalibrateConfig", "Calibration", "calibrate", "register"]

log = logging.getLogger(__name__)

FAULTS = ("etcd-latency",)
DEFAULT_FORS = (1.0, 2.0, 3.0, 5.0, 10.0)
LabelsKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CalibrateConfig:
    rule_file: Path
    rule: str
    fault: str = "etcd-latency"
    intensities: tuple[float, ...] = (25, 50, 100, 200, 400, 800)
    jitter: int = 0
    baseline_runs: int = 3
    baseline_s: float = 20.0
    fault_s: float = 20.0
    rate: float = 40.0
    margin: float = 1.0
    fors: tuple[float, ...] = DEFAULT_FORS
    max_ttd: float = 30.0
    verify: bool = True
    out: Path | None = None
    backend: str = "local"

    def validate(self) -> AlertRule:
        """ConfigError naming the flag, before anything starts; returns the rule."""
        if self.backend not in IMPLEMENTED_BACKENDS:
            raise ConfigError("--backend", f"the {self.backend} backend is not implemented yet",
                              expected=" | ".join(IMPLEMENTED_BACKENDS))  # fmt: skip
        if not self.rule_file.is_file():
            raise ConfigError("RULE_FILE", f"{self.rule_file} does not exist")
        rule = load_rule(self.rule_file, self.rule)
        if self.fault not in FAULTS:
            raise ConfigError("--fault", repr(self.fault), expected=" | ".join(FAULTS))
        if not self.intensities or any(not 1 <= i <= 60_000 for i in self.intensities):
            raise ConfigError("--intensities", f"{list(self.intensities)}",
                              expected="latencies in ms, 1..60000, comma-separated")  # fmt: skip
        if not 0 <= self.jitter <= min(self.intensities):
            top = min(self.intensities)
            raise ConfigError("--jitter", f"{self.jitter}", expected=f"0..{top:g} (the smallest)")
        if not 1 <= self.baseline_runs <= 20:
            raise ConfigError("--baseline-runs", f"{self.baseline_runs}", expected="1..20")
        for flag, v in (("--baseline-seconds", self.baseline_s), ("--fault-seconds", self.fault_s)):
            if not (math.isfinite(v) and 5 <= v <= 600):
                raise ConfigError(flag, f"{v}", expected="5..600 seconds")
        if not (math.isfinite(self.rate) and 1 <= self.rate <= MAX_RATE):
            raise ConfigError("--rate", f"{self.rate}", expected=f"1..{MAX_RATE}")
        if not (math.isfinite(self.margin) and 0 <= self.margin <= 100):
            raise ConfigError("--margin", f"{self.margin}", expected="0..100")
        if not self.fors or any(not 0 <= f <= 600 for f in self.fors):
            raise ConfigError("--for", f"{list(self.fors)}", expected="durations 0..600s")
        if not (math.isfinite(self.max_ttd) and 1 <= self.max_ttd <= 600):
            raise ConfigError("--max-ttd", f"{self.max_ttd}", expected="1..600 seconds")
        return rule


@dataclass
class Calibration:
    """What a calibration measured and recommended (also written as calibration.json)."""

    rule: AlertRule
    baseline: list[Window]
    faults: list[Window]
    evaluations: list[Evaluation]
    recommended: Evaluation | None
    limit: float
    out: Path
    rule_file: Path | None = None
    test_file: Path | None = None
    promtool_ok: bool | None = None
    promtool_output: str = ""
    verify: dict[str, Any] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return bool(self.verify.get("quiet")) and self.verify.get("ttd") is not None

    def to_dict(self) -> dict[str, Any]:
        def ev(e: Evaluation) -> dict[str, Any]:
            return {
                "threshold": e.candidate.threshold,
                "for_s": e.candidate.for_s,
                "false_positives": e.false_positives,
                "safe": e.safe,
                "ttd": e.ttd,
            }

        return {
            "rule": self.rule.name,
            "rule_file": str(self.rule.path),
            "lhs": self.rule.lhs,
            "op": self.rule.op,
            "current": {"threshold": self.rule.threshold, "for_s": self.rule.for_s},
            "margin_limit": self.limit,
            "baseline_quantiles": _quantiles(self.baseline),
            "fault_quantiles": {w.label: _quantiles([w]) for w in self.faults},
            "evaluations": [ev(e) for e in self.evaluations],
            "recommended": None if self.recommended is None else ev(self.recommended),
            "written": {"rules": str(self.rule_file), "test": str(self.test_file)},
            "promtool": {"passed": self.promtool_ok, "output": self.promtool_output},
            "verify": self.verify,
        }


def _quantiles(windows: Sequence[Window]) -> dict[str, float | None]:
    values = sorted(v for w in windows for v in w.values())
    if not values:
        return {}
    pick = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0}
    return {
        k: values[min(len(values) - 1, math.ceil(q * len(values)) - 1)] for k, q in pick.items()
    }


def _query_range(url: str, promql: str, start: float, end: float) -> dict[LabelsKey, Samples]:
    resp = httpx.get(
        f"{url}/api/v1/query_range",
        params={"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1"},
        timeout=30.0,
    )
    resp.raise_for_status()
    out: dict[LabelsKey, Samples] = {}
    steps = [start + i for i in range(int(end - start) + 1)]
    for r in resp.json()["data"]["result"]:
        got = {round(float(t) - start): float(v) for t, v in r["values"]}
        key = tuple(sorted((str(k), str(v)) for k, v in r["metric"].items()))
        out[key] = [(t, got.get(i)) for i, t in enumerate(steps)]
    return out


@dataclass
class _Stack:
    prom: Prometheus
    orderd: OrderService
    proxies: list[Proxy]
    scope: Scope
    targets: list[ScrapeTarget]


@contextlib.contextmanager
def _stack(cfg: CalibrateConfig, backend: Backend, run: Run, pki: Pki) -> Iterator[_Stack]:
    with contextlib.ExitStack() as stack:
        etcd = stack.enter_context(EtcdCluster(backend, run, pki, size=3))
        members = etcd.members()
        toxiproxy = stack.enter_context(Toxiproxy(backend, run, ports=[m.name for m in members]))
        proxies = [
            toxiproxy.proxy(f"etcd-client-{m.name}", urlsplit(m.client_url).netloc, port=m.name)
            for m in members
        ]
        orderd = stack.enter_context(
            OrderService(
                backend, run, etcd=etcd, etcd_endpoints=[f"https://{p.listen}" for p in proxies]
            )
        )
        targets = [ScrapeTarget.from_url("orderd", orderd.url)]
        prom = stack.enter_context(Prometheus(backend, run, targets, rule_files=[cfg.rule_file]))
        scope = Scope(run=run, backend=backend, cluster=etcd, workloads=[orderd.name])
        yield _Stack(prom, orderd, proxies, scope, targets)


def _fault(st: _Stack, ms: float, jitter: int, seconds: float) -> Any:
    return compose(
        *[
            Latency(
                st.scope,
                p,
                ms=int(ms),
                jitter=jitter,
                max_duration=seconds + 30,
                name=f"etcd-latency-{int(ms)}ms-{i}",
            )
            for i, p in enumerate(st.proxies)
        ]
    )


def _progress(text: str) -> None:
    print(f"calibrate: {text}", flush=True)


@dataclass(frozen=True)
class _Raw:
    start: float
    end: float
    injected: float | None


def calibrate(cfg: CalibrateConfig, backend: Backend, run: Run, pki: Pki, out: Path) -> Calibration:
    """Measure, recommend, write and (with ``cfg.verify``) verify; see the module doc."""
    rule = cfg.validate()
    settle = rule.range_s + rule.for_s + 3.0
    lead = rule.range_s + 2.0  # recorded before an injection: the promtool test's lead-in
    n_windows = max(cfg.baseline_runs, len(cfg.intensities))
    planned = 15 + n_windows * (cfg.baseline_s + cfg.fault_s + settle) + 120
    out.mkdir(parents=True, exist_ok=True)
    with _stack(cfg, backend, run, pki) as st:
        load = LoadGenerator(run, locustfile="orderd_http", host=st.orderd.url, rate=cfg.rate,
                             duration=planned)  # fmt: skip
        with load:
            _progress(f"warm-up 10s at {cfg.rate:g} req/s")
            time.sleep(10 + rule.range_s)
            raws: list[tuple[str, float | None, _Raw]] = []
            for i in range(n_windows):
                if i < cfg.baseline_runs:
                    t0 = time.time()
                    _progress(f"baseline {i + 1}/{cfg.baseline_runs}: {cfg.baseline_s:g}s")
                    time.sleep(cfg.baseline_s)
                    raws.append((f"baseline-{i + 1}", None, _Raw(t0 - lead, time.time(), None)))
                if i < len(cfg.intensities):
                    ms = cfg.intensities[i]
                    t0 = time.time()
                    _progress(f"fault {cfg.fault} {ms:g}ms (+-{cfg.jitter}): {cfg.fault_s:g}s")
                    with _fault(st, ms, cfg.jitter, cfg.fault_s):
                        injected = time.time()
                        time.sleep(cfg.fault_s)
                    raws.append((f"{ms:g}ms", ms, _Raw(t0 - lead, time.time(), injected)))
                    time.sleep(settle)
            baseline: list[Window] = []
            faults: list[Window] = []
            for label, intensity, raw in raws:
                # The raw span starts ``lead`` early (for the promtool test's windows);
                # a baseline's own evaluations start at its start.
                start = raw.start + lead if intensity is None else raw.start
                series = _query_range(st.prom.url, rule.lhs, start, raw.end)
                w = Window(label, intensity, raw.injected, series)
                (baseline if intensity is None else faults).append(w)
            cal = _recommend(cfg, rule, baseline, faults, out)
            _progress(_summary(cal))
            if cal.recommended is not None:
                _write(cfg, cal, st, raws, out)
                if cfg.verify:
                    _verify(cfg, cal, st, backend, run)
    (out / "calibration.json").write_text(json.dumps(cal.to_dict(), indent=1))
    from harness.thresholds.html import write_html

    write_html(cal, out / "calibration.html")
    return cal


def _recommend(
    cfg: CalibrateConfig, rule: AlertRule, baseline: list[Window], faults: list[Window], out: Path
) -> Calibration:
    limit = margin_limit(baseline, rule.op, cfg.margin)
    thresholds = sorted({*candidate_thresholds(baseline, faults, rule.op), rule.threshold})
    fors = sorted({*cfg.fors, rule.for_s})
    evals = [
        evaluate(Candidate(t, f), baseline, faults, rule.op, limit=limit, max_ttd=cfg.max_ttd)
        for t in thresholds
        for f in fors
    ]
    return Calibration(rule, baseline, faults, evals, recommend(evals, rule.op), limit, out)


def _summary(cal: Calibration) -> str:
    cur = next(
        (e for e in cal.evaluations
         if e.candidate == Candidate(cal.rule.threshold, cal.rule.for_s)), None)  # fmt: skip
    q = _quantiles(cal.baseline)
    lines = [
        f"{cal.rule.name}: baseline p50 {q.get('p50', 0):.4g}, p99 {q.get('p99', 0):.4g}, "
        f"worst {q.get('max', 0):.4g}; margin limit {cal.rule.op} {cal.limit:.4g}"
    ]
    for label, e in (("current", cur), ("recommended", cal.recommended)):
        if e is None:
            lines.append(f"{label}: none safe" if label == "recommended" else f"{label}: -")
            continue
        ttd = ", ".join(f"{k} {'-' if v is None else f'{v:.0f}s'}" for k, v in e.ttd.items())
        lines.append(
            f"{label}: {cal.rule.op} {format_threshold(e.candidate.threshold)} for "
            f"{format_duration(e.candidate.for_s)}: {e.false_positives} false positive(s) on "
            f"the baseline, TTD {ttd}"
        )
    return "\n  ".join(lines)


def _steady_firing(mask: Sequence[bool]) -> list[int]:
    """Indexes in the middle of the longest firing stretch (at least 3 evaluations)."""
    best: tuple[int, int] = (0, 0)
    start = None
    for i, on in enumerate([*mask, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    if best[1] - best[0] < 3:
        return []
    return [(best[0] + best[1]) // 2]


def _write(
    cfg: CalibrateConfig,
    cal: Calibration,
    st: _Stack,
    raws: Sequence[tuple[str, float | None, _Raw]],
    out: Path,
) -> None:
    rec = cal.recommended
    assert rec is not None
    rule = cal.rule
    cal.rule_file = write_rule_file(
        rule, rec.candidate.threshold, rec.candidate.for_s, out / rule.path.name,
        header=(
            f"Written by faultline calibrate from {rule.path}: {rule.name} "
            f"{rule.op} {format_threshold(rule.threshold)} for {format_duration(rule.for_s)} -> "
            f"{rule.op} {format_threshold(rec.candidate.threshold)} for "
            f"{format_duration(rec.candidate.for_s)}\n"
            f"(0 false positives on {len(cal.baseline)} baseline windows; TTD per intensity: "
            + ", ".join(f"{k}={'-' if v is None else f'{v:.0f}s'}" for k, v in rec.ttd.items())
            + ")"
        ),
    )  # fmt: skip
    names = metric_names(rule)
    selector = '{__name__=~"' + "|".join(names) + '"}'
    cases = []
    by_label = {label: raw for label, _, raw in raws}
    base_raw = by_label[cal.baseline[0].label]
    # From when the rule's range is full of recorded data, every 2 s.
    quiet_from = int(rule.range_s + 1)
    length = int(base_raw.end - base_raw.start)
    cases.append(
        PromtoolCase(
            f"quiet on the baseline ({cal.baseline[0].label})",
            [(dict(k), [v for _, v in s]) for k, s in
             _query_range(st.prom.url, selector, base_raw.start, base_raw.end).items()],
            list(range(quiet_from, length, 2)),
            [],
            {},
        )
    )  # fmt: skip
    weakest = steady_intensity(cal)
    if weakest is not None:
        raw = by_label[weakest.label]
        firing_at: list[int] = []
        alert_labels: dict[str, str] = {}
        for key, samples in weakest.series.items():
            idx = _steady_firing(
                firing_mask(samples, rule.op, rec.candidate.threshold, rec.candidate.for_s)
            )
            if idx:
                # An alert carries the series' labels without the metric name.
                firing_at = idx
                alert_labels = {k: v for k, v in key if k != "__name__"}
                break
        if firing_at:
            cases.append(
                PromtoolCase(
                    f"fires under {cfg.fault} {weakest.label}",
                    [(dict(k), [v for _, v in s]) for k, s in
                     _query_range(st.prom.url, selector, raw.start, raw.end).items()],
                    [],
                    firing_at,
                    alert_labels,
                )
            )  # fmt: skip
    incomplete = len(cases) < 2 or not cases[0].quiet_at
    test = out / f"{rule.path.stem}_test.yml"
    test.write_text(promtool_test(cal.rule_file, rule, cases))
    cal.test_file = test
    cal.promtool_ok, cal.promtool_output = run_promtool_test(test)
    if incomplete:
        # A test that checks only one side proves nothing: not a pass.
        cal.promtool_ok = False
        cal.promtool_output = "incomplete: no quiet span or no steady firing to test\n" + (
            cal.promtool_output
        )
    _progress(
        f"wrote {cal.rule_file} and {test}: promtool test rules "
        + ("passed" if cal.promtool_ok else "FAILED:\n" + cal.promtool_output)
    )


def steady_intensity(cal: Calibration, share: float = 0.5) -> Window | None:
    """The weakest fault window in which the recommended rule fired for at least
    ``share`` of the evaluations after the injection: the one to verify against (a
    window detected only by a brief crossing would make a coin toss of the check)."""
    rec = cal.recommended
    if rec is None:
        return None
    for w in sorted(cal.faults, key=lambda w: w.intensity or 0.0):
        t0 = w.injected if w.injected is not None else 0.0
        for samples in w.series.values():
            mask = firing_mask(samples, cal.rule.op, rec.candidate.threshold, rec.candidate.for_s)
            after = [on for (t, _), on in zip(samples, mask, strict=True) if t >= t0]
            if after and sum(after) >= share * len(after):
                return w
    return None


def _firing(prom: Prometheus, name: str) -> bool:
    try:
        return any(a.name == name and a.state == "firing" for a in prom.alerts())
    except httpx.HTTPError:
        return False


def _verify(cfg: CalibrateConfig, cal: Calibration, st: _Stack, backend: Backend, run: Run) -> None:
    """The written rule in a fresh Prometheus: quiet on a fresh baseline, fires under the
    weakest detected intensity within max_ttd."""
    rec = cal.recommended
    assert rec is not None and cal.rule_file is not None
    weakest = steady_intensity(cal)
    if weakest is None or weakest.intensity is None:
        cal.verify = {"quiet": None, "ttd": None, "why": "no intensity detected steadily"}
        _progress("verify: no intensity at which the recommended rule fired steadily")
        return
    with Prometheus(
        backend, run, st.targets, rule_files=[cal.rule_file], name="prometheus-verify"
    ) as prom:
        # Let the rule's window fill with baseline data before it counts.
        time.sleep(cal.rule.range_s + 2)
        _progress(f"verify: fresh baseline {cfg.baseline_s:g}s with the written rule")
        end = time.monotonic() + cfg.baseline_s
        fired_on_baseline = False
        while time.monotonic() < end:
            fired_on_baseline |= _firing(prom, cal.rule.name)
            time.sleep(0.5)
        _progress(f"verify: {cfg.fault} {weakest.label}: fires within {cfg.max_ttd:g}s?")
        ttd = None
        with _fault(st, weakest.intensity, cfg.jitter, cfg.max_ttd):
            t0 = time.monotonic()
            while time.monotonic() - t0 < cfg.max_ttd:
                if _firing(prom, cal.rule.name):
                    ttd = time.monotonic() - t0
                    break
                time.sleep(0.25)
    cal.verify = {"quiet": not fired_on_baseline, "baseline_s": cfg.baseline_s,
                  "intensity": weakest.label, "ttd": ttd, "max_ttd": cfg.max_ttd}  # fmt: skip
    _progress(
        f"verify: baseline {'quiet' if not fired_on_baseline else 'FIRED'}; under "
        f"{weakest.label}: " + ("not fired" if ttd is None else f"fired after {ttd:.1f}s")
    )


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(flag, repr(text), expected="comma-separated numbers") from None
    return values


def _config(a: argparse.Namespace) -> CalibrateConfig:
    fors = tuple(parse_duration(x, field="--for") for x in a.fors.split(",") if x.strip())
    return CalibrateConfig(
        rule_file=Path(a.rule_file),
        rule=a.rule,
        fault=a.fault,
        intensities=_floats(a.intensities, "--intensities"),
        jitter=a.jitter,
        baseline_runs=a.baseline_runs,
        baseline_s=a.baseline_seconds,
        fault_s=a.fault_seconds,
        rate=a.rate,
        margin=a.margin,
        fors=fors,
        max_ttd=a.max_ttd,
        verify=not a.no_verify,
        out=Path(a.out) if a.out else None,
        backend=a.backend,
    )


def cmd_calibrate(a: argparse.Namespace) -> int:
    from harness.pytest_plugin import make_backend

    cfg = _config(a)
    cfg.validate()
    with Run.open() as run:
        out = cfg.out or Path("faultline-reports") / "calibrate" / f"{cfg.rule}-{run.run_id}"
        backend = make_backend(cfg.backend, run)
        try:
            cal = calibrate(cfg, backend, run, Pki.create(run), out.resolve())
        finally:
            backend.close()
    print(f"report: {cal.out / 'calibration.html'}")
    ok = cal.recommended is not None and bool(cal.promtool_ok) and (cal.verified or not cfg.verify)
    print(
        f"faultline calibrate: {cfg.rule}: "
        + ("OK" if ok else "FAILED")
        + f" (exit {0 if ok else 1})"
    )
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``calibrate`` to the ``faultline`` subcommands."""
    p = sub.add_parser(
        "calibrate",
        help="recommend an alert rule's threshold and for: from baseline and fault runs",
        description=(__doc__ or "").split("\n\n")[1],
    )
    p.add_argument("rule_file", metavar="RULE_FILE", help="Prometheus rule file with the rule")
    p.add_argument("--rule", required=True, help="the alerting rule to calibrate")
    p.add_argument("--fault", default="etcd-latency", choices=FAULTS)
    p.add_argument("--intensities", default="25,50,100,200,400,800",
                   help="fault intensities, comma-separated (etcd-latency: ms)")  # fmt: skip
    p.add_argument("--jitter", type=int, default=0, help="etcd-latency jitter, ms (default 0)")
    p.add_argument("--baseline-runs", type=int, default=3, help="baseline windows (default 3)")
    p.add_argument("--baseline-seconds", type=float, default=20.0)
    p.add_argument("--fault-seconds", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=40.0, help="load, requests/s (default 40)")
    p.add_argument("--margin", type=float, default=1.0,
                   help="how far beyond the baseline's worst value, in units of its worst "
                   "excursion from the median (default 1)")  # fmt: skip
    p.add_argument("--for", dest="fors", default="1s,2s,3s,5s,10s",
                   help="candidate for: durations (the rule's own is always added)")  # fmt: skip
    p.add_argument("--max-ttd", type=float, default=30.0,
                   help="a detection later than this (s) does not count")  # fmt: skip
    p.add_argument("--no-verify", action="store_true",
                   help="skip the check of the written rule in a fresh Prometheus")  # fmt: skip
    p.add_argument("--out", help="output directory (default faultline-reports/calibrate/...)")
    p.add_argument("--backend", choices=BACKENDS, default="local")
    p.set_defaults(fn=cmd_calibrate)
