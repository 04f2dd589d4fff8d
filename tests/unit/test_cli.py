"""The faultline command: exit codes, messages, and no side effects on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main, scenario_files


def _faultline(
    *args: str, state: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        env={"FAULTLINE_STATE_DIR": str(state), "PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
        check=False,
    )


def test_list_names_every_scenario_file_with_its_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "etcd-tls-storm" in scenario_files()
    for name in scenario_files():
        assert name in out
    assert "TLS handshake storm" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no-such-scenario"], "SCENARIO: unknown scenario 'no-such-scenario'"),
        (["run", "etcd-tls-storm", "--budget-scale", "0"], "--budget-scale: 0.0 is out of range"),
        (["report", "/nonexistent/report.json"], "/nonexistent/report.json: cannot read a report"),
    ],
)
def test_bad_input_exits_2_naming_the_field_with_no_run_made(
    tmp_path: Path, args: list[str], message: str
) -> None:
    res = _faultline(*args, state=tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"FAULTLINE_BUDGET_SCALE": "fast"},
            "environment FAULTLINE_BUDGET_SCALE: 'fast' is not a number (expected a number >= 1)",
        ),
        ({"FAULTLINE_BUDGET_SCALE": "0.5"}, "FAULTLINE_BUDGET_SCALE: 0.5 is out of range"),
        ({"FAULTLINE_BACKEND": "nomad"}, "environment FAULTLINE_BACKEND: unknown backend 'nomad'"),
        (
            {"FAULTLINE_BACKEND": "kubernetes", "KUBECONFIG": "/nonexistent/kubeconfig"},
            "FAULTLINE_BACKEND: no Kubernetes cluster: no kubeconfig at /nonexistent/kubeconfig",
        ),
        ({"FAULTLINE_KEEP_ARTIFACTS": "maybe"}, "environment FAULTLINE_KEEP_ARTIFACTS: 'maybe'"),
        ({"FAULTLINE_SCENARIOS": "/nonexistent"}, "FAULTLINE_SCENARIOS: '/nonexistent' is not a"),
    ],
)
def test_bad_environment_settings_exit_2_naming_the_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    res = _faultline("run", "etcd-tls-storm", state=tmp_path, env=env)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()


def test_a_relative_state_dir_exits_2(tmp_path: Path) -> None:
    res = _faultline("clean", state=tmp_path, env={"FAULTLINE_STATE_DIR": "rel/state"})
    assert res.returncode == 2
    assert "environment FAULTLINE_STATE_DIR: 'rel/state' is a relative path" in res.stderr


def test_a_report_that_fails_the_schema_exits_2_naming_the_field(tmp_path: Path) -> None:
    from harness.report import build_report
    from harness.timeline import Timeline

    tl = Timeline()
    tl.event("fault.injected", "kill-leader", at=1.0)
    report = build_report(tl, scenario="demo", checks=[])
    report["ttd"][0]["seconds"] = "soon"
    (tmp_path / "report.json").write_text(json.dumps(report))
    res = _faultline("report", str(tmp_path), state=tmp_path)
    assert res.returncode == 2
    assert f"{tmp_path / 'report.json'}: ttd/0/seconds: 'soon' is not of type" in res.stderr
    assert "Traceback" not in res.stderr


def test_argparse_errors_exit_2_too(tmp_path: Path) -> None:
    res = _faultline("run", "etcd-tls-storm", "--backend", "nomad", state=tmp_path)
    assert res.returncode == 2
    assert "invalid choice: 'nomad'" in res.stderr


def test_clean_is_idempotent_and_says_so(tmp_path: Path) -> None:
    dead = tmp_path / "runs" / "faultline-gone"
    dead.mkdir(parents=True)
    (dead / "owner.json").write_text(json.dumps({"pid": 999999, "starttime": 1}))
    first = _faultline("clean", state=tmp_path)
    assert first.returncode == 0
    assert "run gone: 0 change(s) reverted; cleaned" in first.stdout
    second = _faultline("clean", state=tmp_path)
    assert second.returncode == 0
    assert "nothing to clean" in second.stdout


def test_report_prints_a_stored_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.checks import Budget, CheckResult, Status
    from harness.report import build_report
    from harness.timeline import Timeline

    tl = Timeline()
    tl.event("fault.injected", "kill-leader", at=1.0)
    tl.event("alert.firing", "EtcdMemberDown", at=3.5)
    tl.event("fault.reverted", "kill-leader", at=6.0)
    report = build_report(
        tl,
        scenario="demo",
        checks=[CheckResult("c", Status.PASSED, "fine")],
        budget=Budget(max_ttd=5),
    )
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "demo: PASSED" in out
    assert "TTD 2.50s by alert.firing:EtcdMemberDown" in out


def test_doctor_names_the_install_command_when_etcd_is_missing(tmp_path: Path) -> None:
    # A PATH with python but without etcd, prometheus or go.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    res = subprocess.run(
        [sys.executable, "-m", "harness.cli", "doctor"],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir)},
        timeout=60,
        check=False,
    )
    assert res.returncode == 1
    assert "MISSING etcd" in res.stdout
    assert "fix: apt-get install -y etcd-server" in res.stdout
    assert "local backend: NOT ready" in res.stdout


def test_doctor_passes_on_a_machine_set_up_by_ci_setup() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "harness.cli", "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stdout
    assert "local backend: ready" in res.stdout


def test_kubernetes_without_a_cluster_exits_2_saying_how_to_get_one(tmp_path: Path) -> None:
    res = _faultline(
        "run", "etcd-tls-storm", "--backend", "kubernetes",
        state=tmp_path, env={"KUBECONFIG": "/nonexistent/kubeconfig"},
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "--backend: no Kubernetes cluster" in res.stderr
    assert "faultline cluster up" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()
