"""orderd map race crash: an unguarded cache map kills the process under load; the restart heals it.

Seed 000 ch.2.3-2.4 (a key deleted under a concurrent reader; iterating a map
while another path deletes from it) and seed 002's race section: in Go this
is not undefined behaviour that lingers, it is a crash. The runtime notices
the unsynchronized access and stops the whole process with ``fatal error:
concurrent map writes`` (or ``... map read and map write``, ``... map
iteration and map write``), dropping every in-flight request.

- orderd (normal build; orders in a one-member TLS etcd, so they outlive the
  process) runs under a restart policy (on-failure, 0.5 s backoff: the local
  analogue of Kubernetes' CrashLoopBackOff) and serves paced locust load
  (create, reserve, get, list);
- a real Prometheus scrapes orderd every second with fixtures/alerts/;
- the baseline is the control window: the fixed code (cache under an
  RWMutex) under the same load, where nothing may crash, hit or page;
- the fault switches ``map_race`` on through the admin API (8192 unguarded
  cache writes per request, list requests iterate the cache while writers
  evict). orderd is started with the bug off, so the restart comes back with
  the fixed code, as a rollback would; switching the bug off afterwards is
  verified against the restarted process.

Proven: with the fix there is no crash, no detector hit and no alert fires
(``GoProcessRestarted``, ``OrderdSuccessRatioLow`` or any other); with the
bug the process dies with a concurrent map fatal error whose stack names
orderd's cache functions (the detector hit is the time to detect), the
supervisor restarts it (seen by the backend and by ``GoProcessRestarted``
within budget), and the order success ratio is back to >= 99% within the
recovery budget counted from the crash.
"""

from __future__ import annotations

import httpx
import pytest

from harness.backends.base import Backend, RestartMode, RestartPolicy
from harness.checks import (
    Budget,
    CheckResult,
    Status,
    alert_fired_within,
    alert_quiet,
    detected_within,
    fault_took_effect,
    recovered_within,
)
from harness.components.etcd import EtcdCluster
from harness.components.orderd import OrderService
from harness.components.prometheus import Prometheus, ScrapeTarget
from harness.faults.base import Scope
from harness.faults.bugs import BugSwitch
from harness.load import LoadGenerator
from harness.observe.logs import LogDetector
from harness.observe.oom import OomWatcher
from harness.observe.prom import AlertWatcher
from harness.pki import Pki
from harness.run import Run
from harness.scenario import MakeIncident
from harness.timeline import Event, Timeline

pytestmark = [pytest.mark.scenario, pytest.mark.timeout(240)]

BASELINE_S = 10.0
CRASH_MAX_S = 25.0
RECOVERY_MAX_S = 25.0
LOAD_RPS = 50.0
CACHE_WRITES_PER_REQUEST = 8192
MAP_CRASHES = ("concurrent_map_writes", "concurrent_map_read", "concurrent_map_iteration")
# orderd's cache functions: a crash elsewhere is not this bug.
CACHE_FUNCTIONS = ("cachePut", "cacheFill", "cacheGet", "cacheScan")
BUDGET = Budget(max_ttd=15.0, max_ttr=10.0, must_fire=("GoProcessRestarted",))
QUIET_ON_CONTROL = ("GoProcessRestarted", "OrderdSuccessRatioLow")


def test_map_race_crashes_orderd_and_the_restart_recovers(
    make_incident: MakeIncident, backend: Backend, run: Run, pki: Pki
) -> None:
    incident = make_incident(
        "orderd-map-crash",
        title="Unguarded cache map: orderd dies with 'fatal error: concurrent map ...', restarts",
        seed="seed 000 ch.2.3-2.4, seed 002 race section (concurrent map access crashes Go)",
        budget=BUDGET,
    )
    incident.key_series = ["load.success_ratio", "load.rps", "load.p95_ms", "load.failures_per_s"]
    tl = run.timeline
    restart = RestartPolicy(RestartMode.ON_FAILURE, backoff_initial=0.5, backoff_max=5.0)
    with (
        EtcdCluster(backend, run, pki, size=1) as etcd,
        OrderService(backend, run, etcd=etcd, restart=restart) as orderd,
        Prometheus(backend, run, [ScrapeTarget.from_url("orderd", orderd.url)]) as prom,
    ):
        load = LoadGenerator(
            run,
            locustfile="orderd_http",
            host=orderd.url,
            rate=LOAD_RPS,
            duration=BASELINE_S + CRASH_MAX_S + RECOVERY_MAX_S + 15,
        )
        bug = BugSwitch(
            Scope(run=run, backend=backend),
            orderd.admin_url,
            "map_race",
            intensity=CACHE_WRITES_PER_REQUEST,
            max_duration=CRASH_MAX_S + 30,
        )
        detector = LogDetector(
            tl, {orderd.name: backend.log_path(orderd.name)}, project=orderd.project
        )
        with incident.observing(
            load,
            detector,
            OomWatcher(backend, tl, [orderd.name]),
            AlertWatcher(prom.url, tl),
        ):
            with incident.phase("baseline"):
                incident.hold(BASELINE_S)
            with incident.phase("fault"):
                bug.inject()
                try:
                    incident.hold_until(
                        lambda: (
                            bool(tl.events("workload.restarted", orderd.name))
                            and _ready(orderd.url)
                        ),
                        timeout=CRASH_MAX_S,
                        what="orderd crashed and its restart ready",
                    )
                finally:
                    # The restarted process runs with its start flags (bug off);
                    # the revert verifies that against the new process.
                    bug.revert()
            with incident.phase("recovery"):
                incident.hold_until(
                    lambda: _success_since_restart(tl, orderd.name, 0.99),
                    timeout=RECOVERY_MAX_S,
                    what="order success ratio >= 99%",
                )
                # The ratio must hold, and Prometheus must have scraped the new process.
                incident.hold(6.0)

    baseline = incident.window("baseline") or (0.0, 0.0)
    crash = _first_crash(tl, after=baseline[1])
    incident.figure_from_series("order success ratio", "load.success_ratio", worst="min")
    incident.figure_from_series("failed requests/s", "load.failures_per_s", worst="max")
    incident.figure_from_series("throughput (req/s)", "load.rps", worst="min")
    incident.figure(
        "orderd restarts",
        normal=0.0,
        worst=float(len(tl.events("workload.restarted", orderd.name))),
    )
    incident.check(
        CheckResult(
            "control:no_crash_with_the_cache_locked",
            Status.PASSED
            if not _events_in(tl, ("detector.hit", "workload.restarted"), baseline)
            else Status.FAILED,
            f"{len(_events_in(tl, ('detector.hit',), baseline))} detector hit(s), "
            f"{len(_events_in(tl, ('workload.restarted',), baseline))} restart(s) in "
            f"{baseline[1] - baseline[0]:.0f}s of the same load with the fix",
        ),
        # Every alert seen in the run, not just the named ones, must be quiet on the control.
        *[
            alert_quiet(tl, a, baseline)
            for a in sorted(set(QUIET_ON_CONTROL) | {e.name for e in tl.events("alert.firing")})
        ],
        _crash_names_the_cache(crash),
        fault_took_effect(tl, "workload.restarted", fault=bug.name),
        detected_within(tl, fault=bug.name, kind="detector.hit", budget=incident.budget),
        *[
            alert_fired_within(tl, a, fault=bug.name, budget=incident.budget)
            for a in incident.budget.must_fire
        ],
        recovered_within(
            tl.series("load.success_ratio"),
            after=crash.t if crash is not None else float("inf"),
            ok=lambda r: r >= 0.99,
            hold=5.0,
            budget=incident.budget,
            name="order success ratio >= 99% after the crash",
        ),
    )
    if crash is not None:
        incident.note(f"crash: {crash.detail.get('line')} at {crash.detail.get('top_frame')}")
    incident.assert_passed()


def _events_in(tl: Timeline, kinds: tuple[str, ...], window: tuple[float, float]) -> list[Event]:
    return [e for k in kinds for e in tl.events(k) if window[0] <= e.t <= window[1]]


def _first_crash(tl: Timeline, *, after: float) -> Event | None:
    return next(
        (e for e in tl.events("detector.hit") if e.t >= after and e.name in MAP_CRASHES), None
    )


def _crash_names_the_cache(crash: Event | None) -> CheckResult:
    """The evidence: a concurrent-map fatal error whose failing stack is orderd's cache."""
    name = "fault_took_effect:concurrent_map_fatal_error_in_the_cache"
    if crash is None:
        return CheckResult(name, Status.FAILED, f"no {' / '.join(MAP_CRASHES)} report in the log")
    stack = str(crash.detail.get("stack", ""))
    named = [f for f in CACHE_FUNCTIONS if f"orderd.(*Service).{f}(" in stack]
    return CheckResult(
        name,
        Status.PASSED if named else Status.FAILED,
        f"{crash.detail.get('line')!r}; failing stack "
        + (f"in {', '.join(named)}" if named else "does not name orderd's cache functions"),
        {"crash": crash.name, "top_frame": crash.detail.get("top_frame")},
    )


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _success_since_restart(tl: Timeline, workload: str, ratio: float) -> bool:
    """The latest second of load after the restart succeeded at ``ratio`` or better."""
    restarts = tl.events("workload.restarted", workload)
    samples = [s for s in tl.series("load.success_ratio") if restarts and s.t > restarts[0].t]
    return bool(samples) and samples[-1].value >= ratio
