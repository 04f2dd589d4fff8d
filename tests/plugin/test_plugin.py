"""The pytest plugin, through pytester: options, precedence, errors, markers, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

_SHOW = """
def test_show(faultline_settings):
    s = faultline_settings
    print(f"SETTINGS backend={s.backend} scale={s.budget_scale} dir={s.report_dir}",
          f"keep={s.keep_artifacts}")
"""


def _settings_line(result: pytest.RunResult) -> str:
    line = next(line for line in result.outlines if "SETTINGS" in line)
    return line[line.index("SETTINGS") :].removesuffix(".").strip()


def test_defaults(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FAULTLINE_BACKEND", "FAULTLINE_BUDGET_SCALE", "FAULTLINE_REPORT_DIR"):
        monkeypatch.delenv(var, raising=False)
    pytester.makepyfile(_SHOW)
    result = pytester.runpytest("-s")
    result.assert_outcomes(passed=1)
    assert _settings_line(result) == (
        "SETTINGS backend=local scale=1.0 dir=faultline-reports keep=False"
    )


def test_cli_beats_environment_beats_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(
        "[pytest]\nfaultline_backend = docker\nfaultline_budget_scale = 3\n"
        "faultline_report_dir = from-ini\n"
    )
    pytester.makepyfile(_SHOW)
    monkeypatch.setenv("FAULTLINE_BUDGET_SCALE", "2")
    result = pytester.runpytest("-s", "--budget-scale=4")
    assert _settings_line(result) == "SETTINGS backend=docker scale=4.0 dir=from-ini keep=False"
    result = pytester.runpytest("-s")
    assert _settings_line(result) == "SETTINGS backend=docker scale=2.0 dir=from-ini keep=False"


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--backend=nomad"], {}, "--backend: unknown backend 'nomad'"),
        (["--budget-scale=fast"], {}, "--budget-scale: 'fast' is not a number"),
        ([], {"FAULTLINE_BUDGET_SCALE": "0.5"}, "environment FAULTLINE_BUDGET_SCALE: 0.5"),
        ([], {"FAULTLINE_BACKEND": "k8s"}, "environment FAULTLINE_BACKEND: unknown backend"),
        (
            [],
            {"FAULTLINE_KEEP_ARTIFACTS": "maybe"},
            "environment FAULTLINE_KEEP_ARTIFACTS: 'maybe'",
        ),
    ],
)
def test_bad_values_are_usage_errors_naming_their_source(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    expected: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pytester.makepyfile(_SHOW)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*faultline: {expected}*"])


def test_markers_are_registered_under_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.scenario
        @pytest.mark.backends("docker")
        def test_docker_only():
            pass
        """
    )
    result = pytester.runpytest("--strict-markers", "--backend=local", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*runs on docker; this session uses local*"])


def test_backend_unavailable_becomes_a_skip_with_its_fix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from harness.errors import BackendUnavailable

        def test_needs_engine():
            raise BackendUnavailable("a Docker engine", "apt-get install docker.io")
        """
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*a Docker engine is not available: apt-get install docker.io*"])


_VICTIM = """
import time

def test_holds_a_run(run):
    seq = run.ledger.record("marker", {"op": "remove_tree", "path": str(run.dir / "faultline-m")})
    (run.dir / "faultline-m").mkdir()
    run.ledger.applied(seq)
    print("RUN_DIR", run.dir, flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_reverts_everything_and_exits_128_plus_signal(
    tmp_path: Path, signum: int, code: int
) -> None:
    victim = tmp_path / "test_victim.py"
    victim.write_text(textwrap.dedent(_VICTIM))
    env = {**os.environ, "FAULTLINE_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(victim), "-s", "-q", "-p", "no:cacheprovider"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    line = ""
    while not line.startswith("RUN_DIR"):
        line = proc.stdout.readline()
        assert line, "the victim ended before opening its run"
    run_dir = Path(line.split()[1])
    time.sleep(0.2)  # let the test reach its sleep
    proc.send_signal(signum)
    proc.send_signal(signum)  # a second signal must not cut the revert short
    assert proc.wait(timeout=30) == code
    assert not run_dir.exists()


_COVERED = """
from harness.checks import Budget, CheckResult, Status

def _story(make_incident, run, name, fired):
    incident = make_incident(name, title=name, seed="seed", budget=Budget(max_ttd=5))
    run.timeline.event("alert.rules_loaded", "prometheus", rules=["A", "B", "C"])
    for alert in fired:
        run.timeline.event("alert.firing", alert, labels={})
    incident.check(CheckResult("c", Status.PASSED, "ok"))

def test_storm(make_incident, run):
    _story(make_incident, run, "storm", ["A"])

def test_oom(make_incident, run):
    _story(make_incident, run, "oom", ["A", "B"])
"""


def test_the_session_ends_with_alert_coverage_over_its_reports(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAULTLINE_STATE_DIR", str(tmp_path / "state"))
    pytester.makepyfile(_COVERED)
    reports = tmp_path / "reports"
    result = pytester.runpytest(f"--report-dir={reports}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*faultline alert coverage*",
            "alert coverage over 2 scenario(s): 3 rules, 2 fired somewhere, 1 never fired*",
            "*A*oom, storm*-",
            "*B*oom*storm",
            "untested (never fired anywhere): C",
        ]
    )
    data = json.loads((reports / "coverage.json").read_text())
    assert data["untested"] == ["C"]
    assert (reports / "coverage.html").exists()


def test_no_reports_no_coverage_section(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "faultline alert coverage" not in result.stdout.str()
