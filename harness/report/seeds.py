"""The seed-vs-reproduction table: a postmortem's before / worst / after figures
beside the ones a run measured, each as a ratio to its own before value.

The seed's figures are data, in ``fixtures/seed_figures.json``: per scenario, a
``source`` (which table of which seed), an optional ``note``, and ``rows``
keyed by the metric name the scenario records with ``Incident.figure`` /
``figure_from_series`` (normal / worst / recovered). Absolute numbers cannot
match (a production fleet against one laptop); the ratios say whether the
reproduction moved the metric as far, and back, as the incident did.

>>> seed_comparison("etcd-tls-storm", {"P95 latency (ms)": {"normal": 15.0, "worst": 1000.0,
...                                    "recovered": 16.0}})["rows"][0]["measured_ratio"]
{'worst': 66.67, 'after': 1.067}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

__all__ = ["SEED_FIGURES_PATH", "seed_comparison", "seed_figures"]

SEED_FIGURES_PATH = Path(__file__).resolve().parents[2] / "fixtures" / "seed_figures.json"
_POINTS = ("before", "worst", "after")


def _number(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(field, repr(value), expected="a finite number or null")
    return float(value)


@cache
def seed_figures(path: Path = SEED_FIGURES_PATH) -> dict[str, dict[str, Any]]:
    """The seed figures file, checked: scenario -> {source, note, rows}."""
    where = path.name
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(where, f"cannot read it: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(where, "not an object", expected="scenario -> {source, rows}")
    out: dict[str, dict[str, Any]] = {}
    for scenario, entry in data.items():
        at = f"{where}: {scenario}"
        if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
            raise ConfigError(f"{at}.source", "missing", expected="a string naming the seed table")
        rows = entry.get("rows")
        if not isinstance(rows, dict) or not rows:
            raise ConfigError(f"{at}.rows", "missing or empty", expected="metric -> figures")
        checked = {}
        for metric, row in rows.items():
            if not isinstance(row, dict) or not isinstance(row.get("seed_metric"), str):
                raise ConfigError(f"{at}.rows.{metric}.seed_metric", "missing", expected="a name")
            checked[metric] = {
                "seed_metric": row["seed_metric"],
                **{p: _number(row.get(p), f"{at}.rows.{metric}.{p}") for p in _POINTS},
            }
        out[scenario] = {"source": entry["source"], "note": entry.get("note"), "rows": checked}
    return out


def _ratio(value: float | None, before: float | None) -> float | None:
    if value is None or before is None or before == 0:
        return None
    return float(f"{value / before:.4g}")


def _ratios(points: Mapping[str, float | None]) -> dict[str, float | None]:
    return {
        "worst": _ratio(points["worst"], points["before"]),
        "after": _ratio(points["after"], points["before"]),
    }


def seed_comparison(
    scenario: str, figures: Mapping[str, Mapping[str, float | None]]
) -> dict[str, Any] | None:
    """The table for ``scenario``'s measured ``figures``; None when the seed file has no
    entry for it. A metric the run did not measure keeps null measured figures."""
    entry = seed_figures().get(scenario)
    if entry is None:
        return None
    rows = []
    for metric, seed in entry["rows"].items():
        got = figures.get(metric) or {}
        measured = {
            "before": got.get("normal"),
            "worst": got.get("worst"),
            "after": got.get("recovered"),
        }
        seed_points = {p: seed[p] for p in _POINTS}
        rows.append(
            {
                "metric": metric,
                "seed_metric": seed["seed_metric"],
                "seed": seed_points,
                "measured": measured,
                "seed_ratio": _ratios(seed_points),
                "measured_ratio": _ratios(measured),
            }
        )
    out: dict[str, Any] = {"source": entry["source"], "rows": rows}
    if entry["note"]:
        out["note"] = entry["note"]
    return out
