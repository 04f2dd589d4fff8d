"""orderd data race: the -race build reports the unguarded cache with both racing stacks.

Seed 000 ch.2.3 (a key deleted while another goroutine reads it) and seed 002
ch.4 (-race as the dynamic check for races): a race that has not crashed yet
is silent in every metric; only the race detector shows it, and a report is
worth something only when it names both sides of the race.

- orderd built with ``-race`` (orders in a one-member TLS etcd) serves paced
  locust load (create, reserve, get, list) and logs to its workload log, which
  a LogDetector tails;
- the baseline is the control window: the fixed code (cache under an
  RWMutex) under the same load, where the race detector must stay silent;
- the fault switches ``map_race`` on through the admin API (each request's
  256 cache writes made behind it by two goroutines that take no lock; gets
  read and lists iterate the cache meanwhile) until the first report, then
  switches it off again.

Proven: with the fix, no race report under load (no false positive); with
the bug, ``WARNING: DATA RACE`` is detected within the time-to-detect budget
and the captured report holds both accesses, the current one and the
previous one, each with a stack through orderd's own functions, one of them
the cache.
"""

from __future__ import annotations

import re

import pytest

from harness.backends.base import Backend, RestartMode, RestartPolicy
from harness.checks import (
    Budget,
    CheckResult,
    Status,
    detected_within,
    fault_took_effect,
)
from harness.components.etcd import EtcdCluster
from harness.components.orderd import OrderService
from harness.faults.base import Scope
from harness.faults.bugs import BugSwitch
from harness.load import LoadGenerator
from harness.observe.logs import LogDetector
from harness.pki import Pki
from harness.run import Run
from harness.scenario import MakeIncident
from harness.timeline import Event

pytestmark = [pytest.mark.scenario, pytest.mark.timeout(300)]

BASELINE_S = 10.0
RACE_MAX_S = 30.0
LOAD_RPS = 50.0
CACHE_WRITES_PER_REQUEST = 256
ORDERD_CODE = "/go_targets/internal/orderd."
CACHE_FUNCTIONS = ("cachePut", "cacheFill", "cacheGet", "cacheScan")
# "Read at 0x00c0001ecc90 by goroutine 40:" / "Previous write at ... by goroutine 43:"
ACCESS = re.compile(r"^(Previous )?(read|write|Read|Write) at 0x[0-9a-f]+ by goroutine \d+:")
BUDGET = Budget(max_ttd=20.0)


def test_race_detector_names_both_sides_of_the_cache_race(
    make_incident: MakeIncident, backend: Backend, run: Run, pki: Pki
) -> None:
    incident = make_incident(
        "orderd-data-race",
        title="Unguarded cache map under load: the -race build reports it, both stacks",
        seed="seed 000 ch.2.3, seed 002 ch.4 (concurrent map access; -race detection)",
        budget=BUDGET,
    )
    incident.key_series = ["load.success_ratio", "load.rps", "load.p95_ms"]
    tl = run.timeline
    # The race build still has the runtime's map checks: should it crash
    # anyway, the restart keeps the run going and the crash shows as a hit.
    restart = RestartPolicy(RestartMode.ON_FAILURE, backoff_initial=0.5, backoff_max=5.0)
    with (
        EtcdCluster(backend, run, pki, size=1) as etcd,
        OrderService(backend, run, etcd=etcd, race=True, restart=restart) as orderd,
    ):
        load = LoadGenerator(
            run,
            locustfile="orderd_http",
            host=orderd.url,
            rate=LOAD_RPS,
            duration=BASELINE_S + RACE_MAX_S + 15,
        )
        bug = BugSwitch(
            Scope(run=run, backend=backend),
            orderd.admin_url,
            "map_race",
            intensity=CACHE_WRITES_PER_REQUEST,
            max_duration=RACE_MAX_S + 30,
        )
        detector = LogDetector(
            tl, {orderd.name: backend.log_path(orderd.name)}, project=orderd.project
        )
        with incident.observing(load, detector):
            with incident.phase("baseline"):
                incident.hold(BASELINE_S)
            with incident.phase("fault"), bug:
                incident.hold_until(
                    lambda: bool(tl.events("detector.hit", "data_race")),
                    timeout=RACE_MAX_S,
                    what="a WARNING: DATA RACE report",
                )
            with incident.phase("recovery"):
                # The load's last seconds after the fix, for the figures.
                incident.hold(3.0)

    baseline = incident.window("baseline") or (0.0, 0.0)
    in_control = [e for e in tl.events("detector.hit") if baseline[0] <= e.t <= baseline[1]]
    race = next(iter(tl.events("detector.hit", "data_race")), None)
    fault = incident.window("fault") or (0.0, 0.0)
    reports = [e for e in tl.events("detector.hit", "data_race") if e.t >= fault[0]]
    incident.figure_from_series("order success ratio", "load.success_ratio", worst="min")
    incident.figure_from_series("P95 latency (ms)", "load.p95_ms", worst="max")
    incident.figure("race reports", normal=float(len(in_control)), worst=float(len(reports)))
    incident.check(
        CheckResult(
            "control:no_race_report_with_the_cache_locked",
            Status.PASSED if not in_control else Status.FAILED,
            f"{len(in_control)} detector hit(s) in {baseline[1] - baseline[0]:.0f}s "
            "of the same load with the fix"
            + (f": first {in_control[0].detail.get('line')!r}" if in_control else ""),
            {"hits": float(len(in_control))},
        ),
        fault_took_effect(tl, "detector.hit", fault=bug.name, evidence_name="data_race"),
        detected_within(
            tl, fault=bug.name, kind="detector.hit", name="data_race", budget=incident.budget
        ),
        _both_stacks_captured(race),
    )
    crashes = [e for e in tl.events("detector.hit") if e.name != "data_race"]
    if crashes:
        incident.note(f"the race build also crashed: {crashes[0].detail.get('line')}")
    incident.assert_passed()


def _access_blocks(stack: str) -> list[tuple[str, list[str]]]:
    """The report's access sections: (header, frame lines), in report order."""
    blocks: list[tuple[str, list[str]]] = []
    frames: list[str] | None = None
    for line in stack.splitlines():
        if ACCESS.match(line):
            frames = []
            blocks.append((line, frames))
        elif frames is not None and line.startswith(" ") and line.strip():
            frames.append(line.strip())
        else:
            # A blank line or "Goroutine N (running) created at:" ends the section.
            frames = None
    return blocks


def _orderd_functions(frames: list[str]) -> list[str]:
    # Frames alternate "pkg.fn()" and "file.go:line +0x..": keep orderd's calls.
    return [f.rsplit(".", 1)[-1].split("(", 1)[0] for f in frames if ORDERD_CODE in f and "(" in f]


def _both_stacks_captured(race: Event | None) -> CheckResult:
    """The report names the racing access and the previous one, both in orderd's code."""
    name = "race_report_has_both_stacks"
    if race is None:
        return CheckResult(name, Status.FAILED, "no WARNING: DATA RACE report was captured")
    blocks = _access_blocks(str(race.detail.get("stack", "")))
    current = [b for b in blocks if not b[0].startswith("Previous")]
    previous = [b for b in blocks if b[0].startswith("Previous")]
    if not current or not previous:
        return CheckResult(
            name,
            Status.FAILED,
            f"report has {len(current)} current and {len(previous)} previous access section(s);"
            " both sides are needed",
        )
    now_fns, before_fns = _orderd_functions(current[0][1]), _orderd_functions(previous[0][1])
    in_cache = [f for f in CACHE_FUNCTIONS if f in now_fns + before_fns]
    ok = bool(now_fns) and bool(before_fns) and bool(in_cache)
    return CheckResult(
        name,
        Status.PASSED if ok else Status.FAILED,
        f"{current[0][0].split(' at ')[0]} in {' < '.join(now_fns) or 'no orderd frame'}; "
        f"{previous[0][0].split(' at ')[0]} in {' < '.join(before_fns) or 'no orderd frame'}"
        + ("" if in_cache else "; neither side is orderd's cache"),
        {
            "current": current[0][0].split(" at ")[0],
            "current_top": now_fns[0] if now_fns else None,
            "previous": previous[0][0].split(" at ")[0],
            "previous_top": before_fns[0] if before_fns else None,
            "complete": str(race.detail.get("complete")),
        },
    )
