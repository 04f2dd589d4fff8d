"""The example service through exactly the path a user takes, on local and docker.

``faultline init`` (the example's Go package, its own rules and locustfile) into a
temporary directory, then ``pytest`` on the file it wrote, in a child process as
the user runs it: it must pass with the baseline quiet, the fault's effect shown,
the example's own ``InventorydDown`` firing within budget and the service back.
And it must be able to fail: the same scenario expecting an alert a pause never
causes (``InventorydRestarted``) fails on exactly that check.

Cost: about 40 s per run (Go build cached by source hash; ~15 s more the first
time), three runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.errors import MissingDependency
from harness.gobuild import find_go

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "inventoryd"

pytestmark = [pytest.mark.timeout(420)]


def _needs(backend: str) -> None:
    for binary in ("prometheus", "promtool"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} not found: apt-get install -y prometheus")
    try:
        find_go()
    except MissingDependency as err:
        pytest.skip(f"{err.what}: {err.fix}")
    if backend == "docker":
        docker = pytest.importorskip("docker")
        try:
            docker.from_env().ping()
        except Exception as err:  # noqa: BLE001 - any failure means no engine to use
            from harness.backends.docker import ENGINE_FIX

            pytest.skip(f"no Docker engine ({err}): {ENGINE_FIX}")


def _init(out: Path, *extra: str) -> Path:
    res = subprocess.run(
        [sys.executable, "-m", "harness.cli", "init", "--name", "inventoryd",
         "--go-package", str(EXAMPLE), "--arg=--listen=127.0.0.1:8080", "--port", "http=8080",
         "--rules", str(EXAMPLE / "alerts" / "inventoryd.yml"),
         "--locustfile", str(EXAMPLE / "locustfile.py"), "--out", str(out), *extra],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    path = out / "test_inventoryd.py"
    assert f"wrote {path}" in res.stdout
    return path


def _run(scenario: Path, backend: str, reports: Path) -> tuple[int, dict[str, Any], str]:
    """pytest on the generated file, from its directory, as a user would run it."""
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", scenario.name,
         f"--backend={backend}", f"--report-dir={reports}", "-q"],
        cwd=scenario.parent, capture_output=True, text=True, timeout=360, check=False,
        env={**os.environ, "TESTCONTAINERS_RYUK_DISABLED": "true"},
    )  # fmt: skip
    found = sorted(reports.glob("inventoryd/*/report.json"))
    assert len(found) == 1, f"no single report under {reports}:\n{res.stdout[-3000:]}"
    return res.returncode, json.loads(found[0].read_text()), res.stdout[-3000:]


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


@pytest.mark.parametrize("backend", ["local", "docker"])
def test_init_output_runs_and_passes_with_the_examples_own_alert(
    tmp_path: Path, backend: str
) -> None:
    _needs(backend)
    scenario = _init(tmp_path / "scenarios", "--expect-alert", "InventorydDown")
    code, report, out = _run(scenario, backend, tmp_path / "reports")
    assert code == 0, out
    assert report["verdict"] == "passed" and report["backend"] == backend
    checks = _checks(report)
    assert all(c["status"] == "passed" for c in checks.values()), checks
    # The fault took effect (health failed while frozen), and each side was checked.
    assert "fault_took_effect:process_pause" in checks
    quiet = [n for n in checks if n.startswith("alert_quiet:")]
    assert len(quiet) == 4, quiet  # every alert in the example's rules, on the baseline
    fired = checks["alert_fired_within:InventorydDown"]["figures"]
    assert fired["ttd_s"] is not None and fired["ttd_s"] <= fired["budget_s"]
    assert "recovered_within:inventoryd healthy" in checks
    assert "recovered_within:success ratio >= 99%" in checks


def test_init_output_fails_when_the_expected_alert_never_fires(tmp_path: Path) -> None:
    _needs("local")
    # A pause restarts nothing: expecting InventorydRestarted must fail, on that check only.
    scenario = _init(tmp_path / "scenarios", "--expect-alert", "InventorydRestarted")
    code, report, out = _run(scenario, "local", tmp_path / "reports")
    assert code == 1, out
    assert report["verdict"] == "failed"
    failed = [n for n, c in _checks(report).items() if c["status"] != "passed"]
    assert failed == ["alert_fired_within:InventorydRestarted"], failed


def test_the_examples_rules_pass_their_promtool_tests() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool not found: apt-get install -y prometheus")
    res = subprocess.run(
        ["promtool", "test", "rules", "inventoryd_test.yml"],
        cwd=EXAMPLE / "alerts",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
