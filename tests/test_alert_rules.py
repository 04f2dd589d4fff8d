"""Every alert rule file is valid and its promtool unit tests pass (firing and quiet cases)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ALERTS = Path(__file__).resolve().parent.parent / "fixtures" / "alerts"
RULE_FILES = sorted(p for p in ALERTS.glob("*.yml") if not p.name.endswith("_test.yml"))
TEST_FILES = sorted(ALERTS.glob("*_test.yml"))

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not found: apt-get install prometheus (ships promtool)",
)


def test_every_rule_file_has_a_test_file() -> None:
    assert RULE_FILES, f"no rule files in {ALERTS}"
    missing = [p.name for p in RULE_FILES if not (ALERTS / f"{p.stem}_test.yml").exists()]
    assert not missing, f"rule files without a promtool test: {missing}"


def _alert_names(path: Path) -> set[str]:
    return {
        line.split(":", 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.strip().startswith("- alert:")
    }


def test_every_alert_is_tested_and_labelled() -> None:
    for rules in RULE_FILES:
        tested = (ALERTS / f"{rules.stem}_test.yml").read_text()
        for name in _alert_names(rules):
            assert f"alertname: {name}" in tested, f"{rules.name}: {name} has no test case"
        text = rules.read_text()
        assert text.count("- alert:") == text.count("severity:") == text.count("component:")


@needs_promtool
@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_rules_check(rules: Path) -> None:
    out = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(test_file: Path) -> None:
    out = subprocess.run(
        ["promtool", "test", "rules", test_file.name],
        cwd=ALERTS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
