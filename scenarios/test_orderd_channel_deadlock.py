"""orderd deadlocks: reserve stuck on a chan send until liveness restarts it; global deadlock crash.

Seed 002 (order service): the reservation path handed its result to an
unbuffered channel whose reader had gone; every worker of the pool ended up
blocked on that send, reservations hung while the rest of the service (and its
ping) looked fine, and only the liveness probe's restart brought it back. The
seed's second deadlock is the global one: every goroutine asleep, and the Go
runtime kills the process with ``fatal error: all goroutines are asleep -
deadlock!``. Here, compressed to seconds on one machine:

- orderd (in-memory store) runs under the local backend's supervisor with an
  HTTP liveness probe on ``/healthz`` (1 s period, 3 failures) and restart on
  failure; ``/healthz`` fails once a reserve worker's heartbeat is older than
  3 s (the default). Paced locust load over HTTP; a real Prometheus scrapes it every second
  with the rules in fixtures/alerts/; a goroutine dump every 0.5 s;
- control window: the same load with the bug off;
- fault: ``channel_deadlock`` is switched on (every reserve job blocks its
  worker) until the liveness probe restarts the process; the restarted
  process starts with the bug off.

Proven (test 1): with the bug off, no restart, ``GoProcessRestarted`` quiet,
``/healthz`` passing and no deadlock in the dumps (no false positive); with
the bug on, ``/inventory/reserve`` stops succeeding while ``/ping`` keeps
answering (the fault took effect), ``/healthz`` fails, the liveness probe
restarts the process and ``GoProcessRestarted`` fires within the budget, the
dumps taken before the restart show goroutines blocked on a channel send for
longer than 2 s and name the function and line, and reservations succeed again
within the recovery budget after the restart.

Proven (test 2): switching on ``global_deadlock`` makes orderd die with
``fatal error: all goroutines are asleep - deadlock!`` (exit 2); the log
detector reports it within the budget and names the deadlocked frame; nothing
is reported while the bug is off.
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
    recovered_within,
)
from harness.components.orderd import OrderService
from harness.components.prometheus import Prometheus, ScrapeTarget
from harness.faults.base import Scope
from harness.faults.bugs import BugSwitch
from harness.load import LoadGenerator
from harness.observe.buildinfo import ProjectCode
from harness.observe.goroutines import Dump, Finding, find_deadlocks, parse_dump
from harness.observe.logs import LogDetector
from harness.observe.oom import OomWatcher
from harness.observe.poller import Poller
from harness.observe.prom import AlertWatcher
from harness.run import Run
from harness.scenario import MakeIncident
from harness.timeline import Timeline

__all__ = ["DumpTaker", "deadlocks", "scan"]

pytestmark = [pytest.mark.scenario, pytest.mark.timeout(240)]

BASELINE_S = 4.0
CONTROL_S = 8.0
HEALTH_TIMEOUT_S = 3.0
RESTART_MAX_S = 25.0
RECOVERY_MAX_S = 20.0
LOAD_RPS = 20.0
# More users than the rate needs: each hung reservation holds its user until the
# restart, and the others must keep /ping and the other routes going. Not many
# more: each user holds a connection, i.e. a goroutine, and ~100 goroutines that
# appear at the start would look like growth to GoGoroutinesGrowing.
LOAD_USERS = 60
# Every user sends its first request at once: keep that burst out of the baseline.
WARMUP_S = 2.0
# A reservation takes milliseconds: blocked for seconds is stuck. The window must
# span the threshold (the blocked time is measured across dumps).
MIN_BLOCKED_S = 2.0
DUMP_EVERY_S = 0.5
ALERT = "GoProcessRestarted"
# Quiet with the bug off: no restart, no goroutine growth, no SLO alert.
QUIET_IN_CONTROL = (ALERT, "GoGoroutinesGrowing", "OrderdSuccessRatioLow", "OrderdLatencyP99High")
BUDGET = Budget(max_ttd=15.0, max_ttr=12.0, must_fire=(ALERT,))
FAULT = "bug:channel_deadlock"
GLOBAL_BUDGET = Budget(max_ttd=8.0)
GLOBAL_FAULT = "bug:global_deadlock"


class DumpTaker(Poller):
    """Every ``interval``: a goroutine dump and a ``/healthz`` probe of one orderd.

    Each dump is tagged with the process it came from (the backend's PID of the
    main process, the same before and after the dump): goroutine ids start again
    in a new process, so only dumps of one process may be compared. Not by the
    restart count: kubelet reports a restart after the new process already
    serves. ``/healthz`` goes on the timeline as the
    series ``orderd.healthz_ok`` (1 passing, 0 failing or unreachable).
    """

    def __init__(
        self, orderd: OrderService, backend: Backend, timeline: Timeline, *, interval: float = 1.0
    ) -> None:
        super().__init__()
        self.orderd = orderd
        self.backend = backend
        self.timeline = timeline
        self.interval = interval
        self.dumps: list[tuple[int, Dump]] = []  # (pid, dump)
        self._http = httpx.Client(timeout=1.0)

    def stop(self) -> None:
        super().stop()
        self._http.close()

    def poll(self) -> None:
        try:
            ok = self._http.get(self.orderd.url + "/healthz").status_code == 200
        except httpx.HTTPError:
            ok = False
        self.timeline.sample("orderd.healthz_ok", 1.0 if ok else 0.0)
        pid = self.backend.pid(self.orderd.name)
        at = self.timeline.now()
        text = self.orderd.goroutine_dump()
        if pid is not None and self.backend.pid(self.orderd.name) == pid:
            self.dumps.append((pid, parse_dump(text, taken_at=at)))

    def generation(self, n: int) -> list[Dump]:
        """The dumps of the ``n``-th process dumped (0: the first one)."""
        pids = list(dict.fromkeys(pid for pid, _ in self.dumps))
        return [d for pid, d in self.dumps if n < len(pids) and pid == pids[n]]


def deadlocks(dumps: list[Dump], project: ProjectCode) -> list[Finding]:
    """find_deadlocks attributed to orderd's own code (its binary's main module). Its
    by-design idle waits (workers in a select on a ticker) are parking, not deadlocks."""
    return find_deadlocks(dumps, min_blocked=MIN_BLOCKED_S, project=project)


def scan(dumps: list[Dump], project: ProjectCode) -> list[tuple[float, list[Finding]]]:
    """:func:`deadlocks` as a detector running at each dump: (dump time, findings)."""
    out = []
    for i, d in enumerate(dumps):
        if d.taken_at is not None:
            out.append((d.taken_at, deadlocks(dumps[: i + 1], project)))
    return out


def test_channel_deadlock_hangs_reserve_fails_liveness_and_the_restart_heals_it(
    make_incident: MakeIncident, backend: Backend, run: Run
) -> None:
    incident = make_incident(
        "orderd-channel-deadlock",
        title="channel_deadlock on under load: reserve workers block on an unbuffered send",
        seed="seed 002 (order service deadlock: reservations hang, liveness restart)",
        budget=BUDGET,
    )
    incident.key_series = [
        "load.reserve.ok_per_s",
        "load.ping.rps",
        "orderd.healthz_ok",
        "load.rps",
    ]
    tl = run.timeline
    with (
        OrderService(
            backend,
            run,
            liveness=True,
            restart=RestartPolicy(RestartMode.ON_FAILURE, backoff_initial=0.5, max_restarts=3),
            health_timeout_s=HEALTH_TIMEOUT_S,
        ) as orderd,
        Prometheus(backend, run, [ScrapeTarget.from_url("orderd", orderd.url)]) as prom,
    ):
        load = LoadGenerator(
            run,
            locustfile="orderd_http",
            host=orderd.url,
            rate=LOAD_RPS,
            users=LOAD_USERS,
            duration=WARMUP_S + BASELINE_S + CONTROL_S + RESTART_MAX_S + RECOVERY_MAX_S + 10,
        )
        deadlock = BugSwitch(
            Scope(run=run, backend=backend),
            orderd.admin_url,
            "channel_deadlock",
            max_duration=RESTART_MAX_S + 30,
        )
        dumper = DumpTaker(orderd, backend, tl, interval=DUMP_EVERY_S)
        with incident.observing(
            load,
            OomWatcher(backend, tl, [orderd.name], interval=0.25),
            AlertWatcher(prom.url, tl),
            dumper,
        ):
            incident.hold(WARMUP_S)
            with incident.phase("baseline"):
                incident.hold(BASELINE_S)
            with incident.phase("control"):
                incident.hold(CONTROL_S)
            with incident.phase("fault"), deadlock:
                incident.hold_until(
                    lambda: bool(tl.events("workload.restarted", orderd.name)),
                    timeout=RESTART_MAX_S,
                    what="the liveness probe restarting orderd",
                )
            with incident.phase("recovery"):
                incident.hold_until(
                    lambda: _reserve_ok_again(tl),
                    timeout=RECOVERY_MAX_S,
                    what="reservations succeeding again",
                )
                incident.hold(4.0)  # success must hold, not just touch the line
    _reserve_ok_series(tl)

    baseline = incident.window("baseline") or (0.0, 0.0)
    control = incident.window("control") or (0.0, 0.0)
    fault = incident.window("fault") or (0.0, 0.0)
    quiet = (baseline[0], control[1])
    restarts = tl.events("workload.restarted", orderd.name)
    restarted_at = restarts[0].t if restarts else None
    pre_restart = dumper.generation(0)
    control_dumps = [d for d in pre_restart if d.taken_at is not None and d.taken_at <= control[1]]
    _record_first_deadlock_finding(tl, pre_restart, after=fault[0], project=orderd.project)
    control_findings = [f for _, fs in scan(control_dumps, orderd.project) for f in fs]
    incident.check(
        CheckResult(
            "control:no_restart",
            Status.PASSED if not [e for e in restarts if e.t <= control[1]] else Status.FAILED,
            f"{len([e for e in restarts if e.t <= control[1]])} restart(s) before the fault",
        ),
        _healthz(tl, quiet, want_ok=True),
        CheckResult(
            "control:dump_analysis_finds_no_deadlock",
            Status.PASSED if control_dumps and not control_findings else Status.FAILED,
            f"{len(control_dumps)} dumps with the bug off: "
            + (
                "; ".join(map(str, control_findings))
                or f"no goroutine blocked >= {MIN_BLOCKED_S:.0f}s outside the known idle waits"
            ),
            {"dumps": float(len(control_dumps)), "findings": float(len(control_findings))},
        ),
        *[alert_quiet(tl, a, quiet) for a in QUIET_IN_CONTROL],
        _reserve_hangs_while_ping_answers(
            tl, fault[0], restarted_at, pre_restart[-1].taken_at if pre_restart else None
        ),
        _healthz(tl, (fault[0], fault[1]), want_ok=False),
        detected_within(
            tl, fault=FAULT, kind="workload.restarted", name=orderd.name, budget=incident.budget
        ),
        alert_fired_within(tl, ALERT, fault=FAULT, budget=incident.budget),
        detected_within(
            tl, fault=FAULT, kind="detector.hit", name="goroutine_deadlock", budget=incident.budget
        ),
        _dumps_name_the_blocked_send(pre_restart, orderd.project),
        recovered_within(
            tl.series("load.reserve.success_ratio"),
            after=restarted_at if restarted_at is not None else fault[1],
            ok=lambda r: r >= 0.99,
            hold=3.0,
            budget=incident.budget,
            name="reserve success ratio >= 99% after the restart",
        ),
    )
    incident.figure_from_series("reservations ok (/s)", "load.reserve.ok_per_s", worst="min")
    incident.figure_from_series("ping (/s)", "load.ping.rps", worst="min")
    incident.figure_from_series("healthz ok", "orderd.healthz_ok", worst="min")
    incident.figure("restarts", normal=0.0, worst=float(len(restarts)), recovered=None)
    if restarted_at is not None:
        incident.note(
            f"liveness restart {restarted_at - fault[0]:.1f}s after the bug was switched on "
            f"(health timeout {HEALTH_TIMEOUT_S:.0f}s + 3 failed probes 1s apart)"
        )
    incident.assert_passed()


def _reserve_ok_series(tl: Timeline) -> None:
    """``load.reserve.ok_per_s``: successful reservations per second (for the table and picture)."""
    failures = {s.t: s.value for s in tl.series("load.reserve.failures_per_s")}
    for s in tl.series("load.reserve.rps"):
        tl.sample("load.reserve.ok_per_s", s.value - failures.get(s.t, 0.0), at=s.t)


def _reserve_ok_again(tl: Timeline) -> bool:
    after = tl.events("workload.restarted")
    ratio = tl.series("load.reserve.success_ratio")
    return bool(after and ratio) and ratio[-1].t > after[0].t + 1 and ratio[-1].value >= 0.99


def _record_first_deadlock_finding(
    tl: Timeline, dumps: list[Dump], *, after: float, project: ProjectCode
) -> None:
    """The dump detector's hit: the first dump (from the fault on) whose analysis finds a
    goroutine blocked past the threshold, put on the timeline at that dump's time."""
    for at, findings in scan(dumps, project):
        found = [f for f in findings if f.state == "chan send"]
        if at >= after and found:
            tl.event(
                "detector.hit",
                "goroutine_deadlock",
                at=at,
                top_frame=str(found[0].top_frame),
                findings=[str(f) for f in found],
            )
            return


def _in(tl: Timeline, series: str, window: tuple[float, float]) -> list[float]:
    return [s.value for s in tl.series(series) if window[0] <= s.t <= window[1]]


def _healthz(tl: Timeline, window: tuple[float, float], *, want_ok: bool) -> CheckResult:
    probes = _in(tl, "orderd.healthz_ok", window)
    failing = len([p for p in probes if p < 1])
    if want_ok:
        return CheckResult(
            "control:healthz_passes",
            Status.PASSED if probes and not failing else Status.FAILED,
            f"{failing} of {len(probes)} /healthz probes failed with the bug off",
            {"probes": float(len(probes)), "failing": float(failing)},
        )
    return CheckResult(
        "liveness_fails_under_the_deadlock",
        Status.PASSED if failing else Status.FAILED,
        f"{failing} of {len(probes)} /healthz probes failed between the injection and the restart",
        {"probes": float(len(probes)), "failing": float(failing)},
    )


def _reserve_hangs_while_ping_answers(
    tl: Timeline, injected: float, restarted_at: float | None, last_alive: float | None
) -> CheckResult:
    """The evidence per route: no reservation succeeds between the injection and the
    liveness kill, while /ping is served without failures."""
    name = "fault_took_effect:reserve_hangs_ping_answers"
    if restarted_at is None or last_alive is None:
        return CheckResult(name, Status.UNKNOWN, "orderd was never restarted: no hang window")
    # Reservations already running at the injection may still complete; the process is
    # killed after its last dump (``last_alive``) and up to one watcher poll (local) or a
    # kubelet status update (kubernetes) before the restart is seen, and locust's
    # per-second windows end on whole seconds: keep clear of both edges.
    window = (injected + 2.0, min(restarted_at - 1.5, last_alive))
    if window[1] - window[0] < 1.0:
        return CheckResult(name, Status.UNKNOWN, f"hang window too short: {window}")
    reserve_rps = sum(_in(tl, "load.reserve.rps", window))
    reserve_fail = sum(_in(tl, "load.reserve.failures_per_s", window))
    ping_rps = sum(_in(tl, "load.ping.rps", window))
    ping_fail = sum(_in(tl, "load.ping.failures_per_s", window))
    reserve_ok = reserve_rps - reserve_fail
    ok = reserve_ok == 0 and ping_rps > 0 and ping_fail == 0
    return CheckResult(
        name,
        Status.PASSED if ok else Status.FAILED,
        f"over {window[1] - window[0]:.1f}s before the restart: reserve {reserve_ok:.0f} ok "
        f"(sum of per-second rates), ping {ping_rps:.0f} answered, {ping_fail:.0f} failed",
        {
            "window_s": round(window[1] - window[0], 2),
            "reserve_ok": reserve_ok,
            "ping_ok": ping_rps - ping_fail,
            "ping_failed": ping_fail,
        },
    )


def _dumps_name_the_blocked_send(dumps: list[Dump], project: ProjectCode) -> CheckResult:
    """The last dump before the restart: goroutines blocked on a channel send for longer
    than the threshold, with the function and file:line in orderd's code."""
    name = "dump_analysis_names_the_blocked_send"
    findings = deadlocks(dumps, project)
    sends = [f for f in findings if f.state == "chan send" and f.top_frame is not None]
    last = dumps[-1].taken_at if dumps else None
    figures: dict[str, float | str | None] = {
        "dumps_before_restart": float(len(dumps)),
        "blocked_on_send": float(sum(f.count for f in sends)),
        "where": "; ".join(str(f.top_frame) for f in sends) or None,
    }
    if not sends:
        return CheckResult(
            name,
            Status.FAILED,
            f"no goroutine blocked on a chan send >= {MIN_BLOCKED_S:.0f}s in {len(dumps)} dumps "
            "before the restart"
            + (f" (other findings: {'; '.join(map(str, findings))})" if findings else ""),
            figures,
        )
    return CheckResult(
        name,
        Status.PASSED,
        "; ".join(map(str, sends))
        + (f" (last dump before the restart at t={last:.1f}s)" if last is not None else ""),
        figures,
    )


def test_global_deadlock_dies_with_all_goroutines_asleep_and_the_log_detector_names_it(
    make_incident: MakeIncident, backend: Backend, run: Run
) -> None:
    incident = make_incident(
        "orderd-global-deadlock",
        title="global_deadlock on: every goroutine asleep, the Go runtime kills orderd",
        seed="seed 002 (order service deadlock: fatal error: all goroutines are asleep)",
        budget=GLOBAL_BUDGET,
    )
    tl = run.timeline
    with OrderService(backend, run) as orderd:
        detector = LogDetector(
            tl, {orderd.name: backend.log_path(orderd.name)}, project=orderd.project
        )
        crash = BugSwitch(
            Scope(run=run, backend=backend),
            orderd.admin_url,
            "global_deadlock",
            max_duration=30,
        )
        with incident.observing(detector):
            with incident.phase("baseline"), httpx.Client(timeout=2.0) as client:
                # A few real requests with the bug off: the detector must stay silent.
                for _ in range(5):
                    client.get(orderd.url + "/ping").raise_for_status()
                    client.post(orderd.url + "/orders", json={"sku": "sku-1", "qty": 1})
                incident.hold(1.0)
            with incident.phase("fault"), crash:
                incident.hold_until(
                    lambda: bool(tl.events("detector.hit", "all_goroutines_asleep")),
                    timeout=GLOBAL_BUDGET.ttd or 8.0,
                    what="the runtime's deadlock report in orderd's log",
                )
                incident.hold_until(
                    lambda: not backend.status(orderd.name).running,
                    timeout=5.0,
                    what="orderd exited",
                )
        status = backend.status(orderd.name)
    baseline = incident.window("baseline") or (0.0, 0.0)
    before = [e for e in tl.events("detector.hit") if e.t <= baseline[1]]
    hits = tl.events("detector.hit", "all_goroutines_asleep")
    top = hits[0].detail.get("top_frame") if hits else None
    incident.check(
        CheckResult(
            "control:log_detector_silent_with_the_bug_off",
            Status.PASSED if not before else Status.FAILED,
            f"{len(before)} detector hit(s) before the injection",
        ),
        CheckResult(
            "fault_took_effect:process_died_with_exit_2",
            Status.PASSED if not status.running and status.exit_code == 2 else Status.FAILED,
            f"orderd running={status.running}, exit code {status.exit_code} "
            "(the runtime's fatal error exits 2)",
            {"exit_code": status.exit_code},
        ),
        detected_within(
            tl,
            fault=GLOBAL_FAULT,
            kind="detector.hit",
            name="all_goroutines_asleep",
            budget=incident.budget,
        ),
        CheckResult(
            "log_detector_names_the_deadlocked_frame",
            Status.PASSED if top else Status.FAILED,
            f"{hits[0].detail.get('line') if hits else 'no report'}; top frame: {top}",
            {"top_frame": None if top is None else str(top)},
        ),
    )
    incident.assert_passed()
