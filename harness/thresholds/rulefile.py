"""Alert rule files for ``faultline calibrate``: read a rule, write it back with a new
threshold and ``for:``, and generate a promtool test from recorded raw series.

The promtool test (``promtool test rules``) replays series that the real
Prometheus scraped during calibration (every raw metric the rule's expression
reads, also through recording rules of the same file) at 1 s steps, and
expects the alert quiet in the middle of a baseline window and firing where
the offline replay said it fires steadily under the fault.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError, MissingDependency
from harness.thresholds.offline import split_expr

__all__ = [
    "AlertRule",
    "PromtoolCase",
    "format_duration",
    "load_rule",
    "metric_names",
    "parse_duration",
    "promtool_test",
    "run_promtool_test",
    "write_rule_file",
]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# PromQL words that look like metric names.
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip


def parse_duration(text: str, *, field: str) -> float:
    """``"3s"``, ``"500ms"``, ``"2m"`` -> seconds (one unit, as the rule files use)."""
    m = _DURATION.match(str(text).strip())
    if m is None:
        raise ConfigError(field, f"{text!r}", expected="a duration like 3s, 500ms or 1m")
    return float(m.group(1)) * _UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    return f"{round(seconds)}s" if seconds == round(seconds) else f"{round(seconds * 1000)}ms"


@dataclass(frozen=True)
class AlertRule:
    path: Path
    name: str
    expr: str
    lhs: str
    op: str
    threshold: float
    for_s: float
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    records: Mapping[str, str]  # recording rules of the same file: name -> expr

    @property
    def range_s(self) -> float:
        """The longest range selector (``[10s]``) in the expression: how long a window
        takes to empty after a change (0 without one)."""
        exprs = [self.lhs, *self.records.values()]
        found = [
            parse_duration(m, field="expr") for e in exprs for m in re.findall(r"\[(\w+)\]", e)
        ]
        return max(found, default=0.0)


def _load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError("RULE_FILE", f"cannot read {path}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        raise ConfigError("RULE_FILE", f"{path} has no rule groups", expected="groups: [...]")
    return data


def load_rule(path: Path, name: str) -> AlertRule:
    """The alerting rule ``name`` of ``path``; ConfigError naming what is wrong."""
    data = _load(path)
    records: dict[str, str] = {}
    found: dict[str, Any] | None = None
    for g in data["groups"]:
        for r in g.get("rules") or []:
            if "record" in r:
                records[str(r["record"])] = str(r["expr"])
            elif r.get("alert") == name:
                found = r
    if found is None:
        alerts = sorted(
            str(r["alert"]) for g in data["groups"] for r in g.get("rules") or [] if "alert" in r
        )
        raise ConfigError("--rule", f"no alert {name!r} in {path}", expected=", ".join(alerts))
    lhs, op, thr = split_expr(str(found["expr"]), rule=name)
    for_s = parse_duration(found.get("for", "0s"), field=f"rule {name}.for")
    return AlertRule(
        path,
        name,
        str(found["expr"]),
        lhs,
        op,
        thr,
        for_s,
        {str(k): str(v) for k, v in (found.get("labels") or {}).items()},
        {str(k): str(v) for k, v in (found.get("annotations") or {}).items()},
        records,
    )


def format_threshold(value: float) -> str:
    return f"{value:.6g}"


def write_rule_file(
    rule: AlertRule, threshold: float, for_s: float, out: Path, *, header: str
) -> Path:
    """``rule``'s file with the rule's threshold and ``for:`` replaced, at ``out``."""
    data = _load(rule.path)
    for g in data["groups"]:
        for r in g.get("rules") or []:
            if r.get("alert") == rule.name:
                r["expr"] = f"{rule.lhs} {rule.op} {format_threshold(threshold)}"
                r["for"] = format_duration(for_s)
    text = "".join(f"# {line}\n" for line in header.splitlines())
    out.write_text(text + yaml.safe_dump(data, sort_keys=False, width=1000))
    return out


def metric_names(rule: AlertRule) -> list[str]:
    """The raw metric names the rule's expression reads (through recording rules too)."""
    seen: set[str] = set()
    out: set[str] = set()
    todo = [rule.lhs]
    while todo:
        expr = todo.pop()
        expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
        expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
        for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
            word = m.group(0)
            rest = expr[m.end() :].lstrip()
            if rest.startswith("(") or word.lower() in _KEYWORDS or word in seen:
                continue
            seen.add(word)
            if word in rule.records:
                todo.append(rule.records[word])
            else:
                out.add(word)
    return sorted(out)


def _render(template: str, labels: Mapping[str, str], *, field: str) -> str:
    def sub(m: re.Match[str]) -> str:
        return labels.get(m.group(1), "")

    text = re.sub(r"\{\{\s*(?:\$labels|\.Labels)\.(\w+)\s*\}\}", sub, template)
    if "{{" in text:
        raise ConfigError(
            field,
            f"{template!r}: the promtool test cannot predict this template",
            expected="annotations using only {{ $labels.NAME }}",
        )
    return text


def _series_text(labels: Mapping[str, str]) -> str:
    name = labels.get("__name__", "")
    rest = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def _values_text(values: Sequence[float | None]) -> str:
    return " ".join("_" if v is None or math.isnan(v) else f"{v:.10g}" for v in values)


@dataclass(frozen=True)
class PromtoolCase:
    """One promtool test group: raw series at 1 s steps from the window's start, and
    the evaluation times (seconds from that start) where the alert is expected quiet
    or firing with ``alert_labels``."""

    name: str
    series: Sequence[tuple[Mapping[str, str], Sequence[float | None]]]
    quiet_at: Sequence[int]
    firing_at: Sequence[int]
    alert_labels: Mapping[str, str]


def promtool_test(rule_file: Path, rule: AlertRule, cases: Sequence[PromtoolCase]) -> str:
    """The promtool test file (YAML) for ``rule_file`` (in the same directory)."""
    tests = []
    for c in cases:
        labels = {**c.alert_labels, **rule.labels}
        annotations = {
            k: _render(v, labels, field=f"rule {rule.name}.annotations.{k}")
            for k, v in rule.annotations.items()
        }
        checks: list[dict[str, Any]] = [
            {"eval_time": f"{t}s", "alertname": rule.name, "exp_alerts": []} for t in c.quiet_at
        ]
        checks += [
            {
                "eval_time": f"{t}s",
                "alertname": rule.name,
                "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}],
            }
            for t in c.firing_at
        ]
        tests.append(
            {
                "name": c.name,
                "interval": "1s",
                "input_series": [
                    {"series": _series_text(lab), "values": _values_text(vals)}
                    for lab, vals in c.series
                ],
                "alert_rule_test": checks,
            }
        )
    head = f"# promtool test rules {rule_file.with_suffix('').name}_test.yml\n"
    body = {"rule_files": [rule_file.name], "evaluation_interval": "1s", "tests": tests}
    return head + str(yaml.safe_dump(body, sort_keys=False, width=1000))


def run_promtool_test(test_file: Path) -> tuple[bool, str]:
    """``promtool test rules test_file``: (passed, output)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise MissingDependency("promtool", "apt-get install prometheus")
    res = subprocess.run(
        [promtool, "test", "rules", test_file.name],
        cwd=test_file.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return res.returncode == 0, (res.stdout + res.stderr).strip()
