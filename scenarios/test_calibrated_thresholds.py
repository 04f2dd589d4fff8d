"""Calibrated thresholds: orderd P99 and 5xx rules recommended from measured runs, then proven.

Seed 002 §2.5: the SREs compared P99 and the error rate before and after under identical
load and reset thresholds from the baseline's quantiles. Here ``faultline calibrate``'s
engine does it for ``OrderdLatencyP99High`` (etcd latency 50-800 ms) and
``OrderdSuccessRatioLow`` (etcd latency near orderd's 1 s etcd timeout, with jitter: a
share of requests time out, 5xx): baseline windows and fault intensities under the same
load, the rule's expression read back per 1 s evaluation, every threshold x ``for:``
replayed offline, the recommendation written with a promtool test (which must pass), then
loaded into a fresh Prometheus: quiet on a fresh baseline, firing under the weakest
detected intensity within the TTD budget.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends.base import Backend
from harness.checks import Budget, CheckResult, Status
from harness.pki import Pki
from harness.run import Run
from harness.scenario import MakeIncident
from harness.thresholds import CalibrateConfig, calibrate
from harness.thresholds.rulefile import format_threshold

pytestmark = [pytest.mark.scenario, pytest.mark.timeout(900)]

SLO = Path(__file__).resolve().parent.parent / "fixtures" / "alerts" / "orderd_slo.yml"
MAX_TTD = 20.0
RUNS = {
    "OrderdLatencyP99High": {"intensities": (50.0, 200.0, 800.0), "jitter": 0},
    "OrderdSuccessRatioLow": {"intensities": (900.0, 1000.0), "jitter": 300},
}


@pytest.mark.parametrize("rule", list(RUNS))
def test_recommended_threshold_is_quiet_on_baseline_and_fires_under_the_fault(
    make_incident: MakeIncident, backend: Backend, run: Run, pki: Pki, rule: str
) -> None:
    incident = make_incident(
        f"calibrated-thresholds-{rule}",
        title=f"Calibrate {rule} from baseline and fault runs, then prove the recommendation",
        seed="seed 002 §2.5 (thresholds reset from measured quantiles)",
        budget=Budget(max_ttd=MAX_TTD),
    )
    knobs = RUNS[rule]
    cfg = CalibrateConfig(
        rule_file=SLO,
        rule=rule,
        intensities=knobs["intensities"],  # type: ignore[arg-type]
        jitter=knobs["jitter"],  # type: ignore[arg-type]
        baseline_runs=2,
        baseline_s=10.0,
        fault_s=10.0,
        max_ttd=MAX_TTD * incident.budget.scale,
    )
    out = incident.report_dir / incident.name / run.run_id / "calibration"
    cal = calibrate(cfg, backend, run, pki, out)
    rec = cal.recommended
    incident.note(f"calibration report: {out / 'calibration.html'}")
    base_q = {k: v for k, v in (cal.to_dict()["baseline_quantiles"]).items()}
    incident.figure(rule + " baseline", **base_q)
    for w in cal.faults:
        incident.figure(rule + " " + w.label, **cal.to_dict()["fault_quantiles"][w.label])
    incident.check(
        CheckResult(
            "recommended",
            Status.PASSED if rec is not None else Status.FAILED,
            "no safe candidate detects any intensity"
            if rec is None
            else f"{rule} {cal.rule.op} {format_threshold(rec.candidate.threshold)} for "
            f"{rec.candidate.for_s:g}s (was {format_threshold(cal.rule.threshold)} for "
            f"{cal.rule.for_s:g}s), TTD {rec.ttd}",
        ),
        CheckResult(
            "promtool_test_passes",
            Status.PASSED if cal.promtool_ok else Status.FAILED,
            cal.promtool_output[-500:] or "promtool test rules passed",
        ),
        CheckResult(
            "quiet_on_fresh_baseline",
            Status.PASSED if cal.verify.get("quiet") else Status.FAILED,
            f"{cal.verify}",
        ),
        CheckResult(
            "fires_under_the_fault_within_budget",
            Status.PASSED if cal.verify.get("ttd") is not None else Status.FAILED,
            f"{cal.verify}",
            {"ttd_s": cal.verify.get("ttd"), "budget_s": cfg.max_ttd},
        ),
    )
    incident.assert_passed()
