"""faultline init: every bad input exits 2 naming its flag and writes nothing; the output
is a scenario that parses, points at the user's files and keeps their ports' placeholders.

The generated scenario is run for real by tests/e2e/test_init_example.py.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.cli import main
from harness.init_cmd import _rewrite_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "inventoryd"
RULES = EXAMPLE / "alerts" / "inventoryd.yml"
LOCUSTFILE = EXAMPLE / "locustfile.py"

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not found: apt-get install prometheus (init checks rules with it)",
)


def _args(out: Path, *extra: str, drop: tuple[str, ...] = ()) -> list[str]:
    base = {
        "--name": "inventoryd",
        "--go-package": str(EXAMPLE),
        "--rules": str(RULES),
        "--expect-alert": "InventorydDown",
        "--locustfile": str(LOCUSTFILE),
        "--out": str(out),
    }
    argv = ["init", "--arg=--listen=127.0.0.1:8080", "--port", "http=8080"]
    for flag, value in base.items():
        if flag not in drop:
            argv += [flag, value]
    return argv + list(extra)


def test_init_writes_a_scenario_that_names_the_users_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scenarios"
    assert main(_args(out)) == 0
    path = out / "test_inventoryd.py"
    assert f"wrote {path}" in capsys.readouterr().out
    text = path.read_text()
    ast.parse(text)
    compile(text, str(path), "exec")
    assert f'go_package=Path("{EXAMPLE}")' in text
    assert 'args=["--listen={addr:http}"]' in text  # 8080 became the placeholder
    assert f'RULES = [Path("{RULES}")]' in text
    assert '"InventorydDown",\n    "InventorydRestarted",' in text  # every alert must stay quiet
    assert 'EXPECT = ("InventorydDown",)' in text
    assert "ProcessPause(scope, NAME, seconds=FAULT_S)" in text
    assert "def test_inventoryd_pause_is_detected_and_recovers(" in text


def test_init_inside_a_tree_writes_relative_paths_and_a_kill(tmp_path: Path) -> None:
    # A user's repository: the scenario and the service move together.
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo / "svc", ignore=shutil.ignore_patterns("*_test.yml"))
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
    argv = _args(repo / "faultline", "--fault", "kill", "--expect-alert", "InventorydRestarted")
    argv = [a.replace(str(EXAMPLE), str(repo / "svc")) for a in argv]
    assert main(argv) == 0
    text = (repo / "faultline" / "test_inventoryd.py").read_text()
    assert 'go_package=HERE / "../svc"' in text
    assert 'RULES = [HERE / "../svc/alerts/inventoryd.yml"]' in text
    assert 'EXPECT = ("InventorydDown", "InventorydRestarted")' in text
    assert "ProcessKill(scope, NAME, max_duration=FAULT_S + 30)" in text
    assert '"workload.restarted"' in text


def test_init_from_an_image_keeps_the_image_and_the_program_in_it(tmp_path: Path) -> None:
    argv = _args(tmp_path, "--image", "me/inventoryd:1.2", "--command", "/app/inventoryd -v")
    assert main(_no_go(argv)) == 0
    text = (tmp_path / "test_inventoryd.py").read_text()
    assert 'image="me/inventoryd:1.2",' in text
    assert 'command=["/app/inventoryd", "-v", "--listen={addr:http}"],' in text
    assert "from the image\n   me/inventoryd:1.2" in text


def _no_go(argv: list[str]) -> list[str]:
    i = argv.index("--go-package")
    return argv[:i] + argv[i + 2 :]


@pytest.mark.parametrize(
    ("extra", "drop", "message"),
    [
        (["--name", "Not A Name"], ("--name",), "--name: 'Not A Name'"),
        (["--binary", "/bin/true"], (), "--binary and --go-package given"),
        ([], ("--go-package",), "none given"),
        (["--go-package", "/nonexistent"], ("--go-package",), "--go-package: /nonexistent is not"),
        (["--port", "admin=9090"], (), "--port: 9090 appears nowhere"),
        (["--command", "no-such-binary-here x"], ("--go-package",), "is not on PATH"),
        (["--image", "me/inventoryd:1"], ("--go-package",), "--command: required with --image"),
        (["--race", "--binary", "/bin/true"], ("--go-package",), "--race: only with"),
        (["--port", "HTTP=1"], (), "--port: 'HTTP=1'"),
        (["--port", "http"], (), "--port: 'http' given twice"),
        (["--port", "admin=99999"], (), "--port: 'admin=99999'"),
        (["--metrics-port", "admin"], (), "--metrics-port: 'admin'"),
        (["--health-port", "admin"], (), "--health-port: 'admin'"),
        (["--health", "healthz"], (), "--health: 'healthz'"),
        (["--health", "none"], (), "--health: none with --fault pause"),
        (["--env", "NOEQUALS"], (), "--env: 'NOEQUALS'"),
        (["--file", "ca.crt=/nonexistent"], (), "--file: /nonexistent does not exist"),
        (["--memory", "lots"], (), "--memory: 'lots'"),
        (["--rate", "0"], (), "--rate: 0"),
        (["--ttd", "30"], (), "--ttd: 30 s is longer than the pause"),
        (["--fault", "kill", "--restart", "never"], (), "--restart: never with --fault kill"),
        ([], ("--rules",), "--rules: no rule file given"),
        (["--rules", "/nonexistent.yml"], ("--rules",), "--rules: /nonexistent.yml does not exist"),
        ([], ("--expect-alert",), "--expect-alert: required"),
        (["--expect-alert", "NoSuchAlert"], ("--expect-alert",), "'NoSuchAlert' is not in the"),
        ([], ("--locustfile",), "--locustfile: required"),
        (["--locustfile", str(RULES)], ("--locustfile",), "is not a .py file"),
    ],
)
def test_bad_input_exits_2_naming_the_flag_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    drop: tuple[str, ...],
    message: str,
) -> None:
    out = tmp_path / "out"
    assert main(_args(out, *extra, drop=drop)) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    assert not out.exists()


def test_rules_promtool_rejects_and_a_bad_locustfile_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_rules = tmp_path / "bad.yml"
    bad_rules.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: up ==\n"
    )
    bad_locust = tmp_path / "bad.py"
    bad_locust.write_text("def broken(:\n")
    out = tmp_path / "out"
    assert main(_args(out, "--rules", str(bad_rules), drop=("--rules",))) == 2
    assert "--rules: " in capsys.readouterr().err
    assert main(_args(out, "--locustfile", str(bad_locust), drop=("--locustfile",))) == 2
    assert "--locustfile: " in capsys.readouterr().err and not out.exists()


def test_an_existing_scenario_is_kept_unless_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "test_inventoryd.py").write_text("# mine\n")
    assert main(_args(out)) == 2
    assert "--out: " in capsys.readouterr().err
    assert (out / "test_inventoryd.py").read_text() == "# mine\n"
    assert main(_args(out, "--force")) == 0
    assert "make_service" in (out / "test_inventoryd.py").read_text()


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--listen=127.0.0.1:8080", "--listen={addr:http}"),
        ("--listen=:8080", "--listen={addr:http}"),
        ("-addr=0.0.0.0:8080", "-addr={addr:http}"),
        ("--port=8080", "--port={port:http}"),
        ("8080", "{port:http}"),
        ("--upstream=http://localhost:8080/x", "--upstream=http://{addr:http}/x"),
        ("--listen=127.0.0.1:80801", "--listen=127.0.0.1:80801"),
        ("--workers=18080", "--workers=18080"),
    ],
)
def test_port_rewrite(arg: str, expected: str) -> None:
    assert _rewrite_port(arg, "http", "8080") == expected


def test_faultline_help_points_to_the_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "init" in out and "testing your own service:" in out
    assert "pytest DIR/test_NAME.py --backend local" in out
