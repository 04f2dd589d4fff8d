"""A real Prometheus scraping a real exporter we control: the alert goes pending ->
firing -> resolved, and the TTD/TTR derived from the timeline match the known
injection and revert times.

Error bounds (scrape and evaluation every 1 s, alert poll every 0.5 s):
pending (activeAt) comes <= 1 scrape + 1 evaluation after the injection; firing
comes ``for`` later, seen at the next poll (<= 0.5 s); resolved likewise after
the revert. The assertions allow 1 s + one evaluation interval, plus the poll
interval for the poll-timed transitions, plus 0.5 s of slack for a loaded
2-core machine.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.base import Probe, ProbeKind, WorkloadSpec
from harness.backends.local import LocalBackend
from harness.checks import Budget, Status, alert_fired_within, alert_quiet, recovered_within
from harness.components.prometheus import Prometheus, ScrapeTarget, default_rule_files
from harness.errors import ComponentStartError, ConfigError
from harness.observe.prom import AlertWatcher, SeriesSampler
from harness.run import Run
from harness.timeline import time_to_detect
from harness.wait import wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("promtool") is None,
        reason="prometheus/promtool not found: apt-get install prometheus",
    ),
]

SCRAPE = EVAL = 1.0
POLL = 0.5
FOR = 2.0
SLACK = 0.5

# Serves faultline_test_gauge = the number in VALUE_FILE; exits by itself after 120 s.
EXPORTER = textwrap.dedent(
    """
    import sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    port, value_file = int(sys.argv[1]), sys.argv[2]
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            v = open(value_file).read().strip() or "0"
            body = f"faultline_test_gauge {v}\\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    srv = ThreadingHTTPServer(("127.0.0.1", port), H)
    threading.Timer(120, srv.shutdown).start()
    srv.serve_forever()
    """
)

RULES = textwrap.dedent(
    f"""
    groups:
      - name: faultline_test
        rules:
          - alert: FaultlineTestGaugeHigh
            expr: faultline_test_gauge > 0
            for: {int(FOR)}s
            labels: {{severity: warning, component: test}}
    """
)


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    monkeypatch.setenv("FAULTLINE_STATE_DIR", str(tmp_path / "state"))
    r = Run.open(watchdog=False)
    try:
        yield r
    finally:
        assert r.close() == []


@pytest.fixture
def backend(run: Run) -> Iterator[LocalBackend]:
    b = LocalBackend(run)
    try:
        yield b
    finally:
        b.close()


def _exporter(backend: LocalBackend, run: Run, tmp_path: Path) -> tuple[str, Path]:
    script = tmp_path / "exporter.py"
    script.write_text(EXPORTER)
    value = tmp_path / "value"
    value.write_text("0")
    placement = backend.plan("exporter", ["http"])
    backend.start(
        WorkloadSpec(
            name="exporter",
            command=(sys.executable, str(script), str(placement.port("http")), str(value)),
            placement=placement,
            env=run.child_env("exporter"),
            readiness=Probe(ProbeKind.HTTP, "http", path="/metrics", interval=0.1),
        )
    )
    backend.wait_ready("exporter", timeout=15)
    host, port = placement.external("http")
    return f"{host}:{port}", value


def test_alert_lifecycle_and_derived_ttd_ttr(
    backend: LocalBackend, run: Run, tmp_path: Path
) -> None:
    address, value = _exporter(backend, run, tmp_path)
    rules = tmp_path / "test_rules.yml"
    rules.write_text(RULES)
    targets = [ScrapeTarget("exporter", address, memory_limit_bytes=64 << 20)]
    tl = run.timeline
    with Prometheus(backend, run, targets, rule_files=[*default_rule_files(), rules]) as prom:
        assert prom.query('up{job="exporter"}') == 1.0
        # the harness-fed memory limit, as go_runtime.yml's GoMemoryNearLimit expects it
        limit = f'faultline_memory_limit_bytes{{job="exporter",instance="{address}"}}'
        wait_until(lambda: prom.query(limit) is not None, timeout=10, what="limit recorded")
        assert prom.query(limit) == float(64 << 20)

        sampler = SeriesSampler(
            prom.url, tl, {"gauge": 'max(faultline_test_gauge{job="exporter"})'}
        )
        with AlertWatcher(prom.url, tl, interval=POLL), sampler:
            wait_until(lambda: len(tl.series("gauge")) >= 3, timeout=10, what="baseline samples")
            baseline_end = tl.now()

            injected = tl.now()
            value.write_text("1")
            tl.event("fault.injected", "gauge-up", at=injected)
            wait_until(
                lambda: tl.events("alert.firing", "FaultlineTestGaugeHigh") != [],
                timeout=15,
                what="alert firing",
            )
            assert [a.state for a in prom.alerts() if a.name == "FaultlineTestGaugeHigh"] == [
                "firing"
            ]

            reverted = tl.now()
            value.write_text("0")
            tl.event("fault.reverted", "gauge-up", at=reverted)
            wait_until(
                lambda: tl.events("alert.resolved", "FaultlineTestGaugeHigh") != [],
                timeout=15,
                what="alert resolved",
            )
            wait_until(lambda: tl.series("gauge")[-1].value == 0.0, timeout=5, what="gauge 0")

    name = "FaultlineTestGaugeHigh"
    pending = time_to_detect(tl, after=injected, kind="alert.pending", name=name)
    firing = time_to_detect(tl, after=injected, kind="alert.firing", name=name)
    resolved = time_to_detect(tl, after=reverted, kind="alert.resolved", name=name)
    assert pending is not None and firing is not None and resolved is not None
    bound = SCRAPE + EVAL + SLACK
    assert 0.0 <= pending <= bound, f"pending {pending:.2f}s after injection"
    assert FOR <= firing <= FOR + bound + POLL, f"firing {firing:.2f}s after injection"
    assert 0.0 <= resolved <= bound + POLL, f"resolved {resolved:.2f}s after revert"
    # one pending, one firing, one resolved: no flapping
    kinds = [e.kind for e in tl.events() if e.name == name]
    assert kinds == ["alert.pending", "alert.firing", "alert.resolved"]

    budget = Budget(max_ttd=FOR + bound + POLL, max_ttr=bound + POLL)
    assert alert_fired_within(tl, name, fault="gauge-up", budget=budget).status is Status.PASSED
    assert alert_quiet(tl, name, (0.0, baseline_end)).status is Status.PASSED
    rec = recovered_within(
        tl.series("gauge"), reverted, lambda v: v == 0.0, 0.0, budget, name="gauge"
    )
    assert rec.status is Status.PASSED, rec.message
    # The default rules loaded and none of them fired on a healthy exporter.
    assert {e.name for e in tl.events("alert.firing")} == {name}


def test_bad_rule_file_is_a_config_error_before_anything_starts(
    backend: LocalBackend, run: Run, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: up >\n")
    prom = Prometheus(backend, run, [], rule_files=[bad])
    with pytest.raises(ConfigError, match=r"rule_files\[0\].*bad\.yml"):
        prom.start()
    assert not (run.dir / "logs" / "prometheus.log").exists()
    with pytest.raises(ConfigError, match=r"targets\[0\]\.address"):
        Prometheus(backend, run, [ScrapeTarget("x", "10.1.2.3:9100")])


def test_target_down_at_start_names_the_target(
    backend: LocalBackend, run: Run, tmp_path: Path
) -> None:
    # A port nobody listens on: reserved from the backend so no other run uses it.
    # (Prometheus lists static targets only after its ~5 s discovery update.)
    dead = backend.plan("nothing", ["http"]).external("http")
    address = f"{dead[0]}:{dead[1]}"
    prom = Prometheus(
        backend, run, [ScrapeTarget("ghost", address)], rule_files=[], start_timeout=8.0
    )
    with pytest.raises(ComponentStartError) as info, prom:
        pass
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert f"ghost {address}: down" in notes
    assert backend.status("prometheus").running is False
    assert os.path.isdir(run.dir)


def test_scrape_target_from_url() -> None:
    t = ScrapeTarget.from_url("etcd", "http://127.0.0.1:2381/metrics", memory_limit_bytes=1 << 30)
    assert (t.job, t.address, t.scheme, t.metrics_path) == (
        "etcd",
        "127.0.0.1:2381",
        "http",
        "/metrics",
    )
    with pytest.raises(ConfigError, match="not a URL"):
        ScrapeTarget.from_url("etcd", "127.0.0.1:2381")
