"""``report.html``: the incident timeline picture (matplotlib, Agg, PNG inlined) and tables.

One panel per series (latency, error ratio, leader, goroutines, memory... whatever
the run sampled, up to :data:`MAX_SERIES_PANELS`), then an alert lane. Fault
windows are shaded in every panel; alert transitions are marked; TTD and TTR are
drawn as arrows on the top panel.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: CI machines and SSH sessions

import matplotlib.pyplot as plt
from matplotlib.patches import Patch

from harness.report.terminal import (
    SEED_COLUMNS,
    alerts_text,
    fault_rows,
    seed_cells,
    seed_num,
    slo_text,
)

__all__ = ["MAX_SERIES_PANELS", "render_html", "timeline_png"]

MAX_SERIES_PANELS = 6
# Drawn first when a report names no key series: the load's totals, then what
# the harness's own probes measured. Per-endpoint series come last.
_PREFERRED = (
    "load.success_ratio",
    "load.p95_ms",
    "load.rps",
    "writes.ok",
    "etcd.leader",
    "storm.handshakes_per_s",
)
_STATE_COLORS = {"pending": "#f0a030", "firing": "#d62728", "resolved": "#2ca02c"}
_STATUS_COLORS = {"passed": "#2ca02c", "failed": "#d62728", "unknown": "#c08000"}


def _alert_bars(report: dict[str, Any], end: float) -> dict[str, list[tuple[float, float, str]]]:
    """Per alert: (start, end, state) bars for pending and firing stretches."""
    bars: dict[str, list[tuple[float, float, str]]] = {}
    current: dict[str, tuple[float, str]] = {}
    for a in report["alerts"]:
        name, state, t = a["alert"], a["state"], a["t"]
        lane = bars.setdefault(name, [])
        if name in current:
            start, prev = current.pop(name)
            lane.append((start, t, prev))
        if state in ("pending", "firing"):
            current[name] = (t, state)
    for name, (start, state) in current.items():
        bars[name].append((start, end, state))
    return bars


def timeline_png(report: dict[str, Any]) -> bytes:
    """The timeline picture as PNG bytes."""
    series = {k: v for k, v in report["series"].items() if v}
    names = _panel_series(report, series)
    times = [p[0] for v in series.values() for p in v] + [a["t"] for a in report["alerts"]]
    times += [d["t"] for d in report["detections"]]
    for f in report["faults"]:
        times += [f["injected_at"]] + ([f["reverted_at"]] if f["reverted_at"] is not None else [])
    end = max(times, default=1.0)
    start = min(min(times, default=0.0), 0.0)
    bars = _alert_bars(report, end)
    lanes = max(len(bars), 1)
    heights = [2.0] * len(names) + [0.5 + 0.35 * lanes]
    fig, axes = plt.subplots(
        len(heights),
        1,
        sharex=True,
        figsize=(11, sum(heights) + 1.0),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    axs = [row[0] for row in axes]
    for ax, name in zip(axs, names, strict=False):
        pts = series[name]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.4, color="#1f77b4")
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        ax.grid(alpha=0.3)
    lane_ax = axs[-1]
    for i, (_alert, stretches) in enumerate(sorted(bars.items())):
        for s, e, state in stretches:
            lane_ax.barh(i, max(e - s, 0.05), left=s, height=0.6, color=_STATE_COLORS[state])
    lane_ax.set_yticks(range(len(bars)), sorted(bars) or [])
    lane_ax.tick_params(axis="y", labelsize=8)
    lane_ax.set_ylim(-0.7, lanes - 0.3)
    lane_ax.set_xlabel("seconds since run start")
    if bars:
        lane_ax.legend(
            handles=[Patch(color=_STATE_COLORS[s], label=s) for s in ("pending", "firing")],
            loc="upper left",
            fontsize=7,
        )
    else:
        lane_ax.text(0.5, 0.5, "no alerts", transform=lane_ax.transAxes, ha="center", va="center")
    for ax in axs:
        for f in report["faults"]:
            ax.axvspan(
                f["injected_at"],
                f["reverted_at"] if f["reverted_at"] is not None else end,
                color="#d62728",
                alpha=0.10,
            )
        for a in report["alerts"]:
            if a["state"] != "pending":
                ax.axvline(a["t"], color=_STATE_COLORS[a["state"]], lw=0.8, ls="--", alpha=0.7)
        for d in report["detections"]:
            if d["kind"] == "detector.hit":
                ax.axvline(d["t"], color="#9467bd", lw=0.8, ls=":")
    _annotate(axs[0], report)
    axs[0].set_xlim(start, end + max(1.0, 0.02 * (end - start)))
    title = f"{report['scenario']}: {report['verdict'].upper()}"
    axs[0].set_title(title, loc="left", fontsize=11, color=_STATUS_COLORS[report["verdict"]])
    for f in report["faults"]:
        axs[0].text(f["injected_at"], 1.0, f" {f['name']}", transform=axs[0].get_xaxis_transform(),
                    va="bottom", fontsize=8, color="#a01010")  # fmt: skip
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _panel_series(report: dict[str, Any], series: dict[str, Any]) -> list[str]:
    """The report's key series, else the preferred ones, then the rest; at most MAX."""
    first = [n for n in report.get("key_series") or _PREFERRED if n in series]
    rest = sorted(series, key=lambda n: (n.count("."), n))  # totals before per-endpoint
    return list(dict.fromkeys(first + rest))[:MAX_SERIES_PANELS]


def _annotate(ax: Any, report: dict[str, Any]) -> None:
    """TTD and TTR as arrows near the top of the top panel."""
    faults = {f["name"]: f for f in report["faults"]}
    trans = ax.get_xaxis_transform()
    for row in report["ttd"]:
        f = faults.get(row["fault"])
        if f is None or row["seconds"] is None:
            continue
        t0 = f["injected_at"]
        ax.annotate("", xy=(t0 + row["seconds"], 0.82), xytext=(t0, 0.82), xycoords=trans,
                    arrowprops={"arrowstyle": "<->", "color": "#d62728"})  # fmt: skip
        ax.text(t0 + row["seconds"] / 2, 0.84, f"TTD {row['seconds']:.1f}s", transform=trans,
                ha="center", va="bottom", fontsize=8, color="#d62728")  # fmt: skip
    for row in report["ttr"]:
        f = faults.get(row["fault"])
        if f is None or row["seconds"] is None or f["reverted_at"] is None:
            continue
        t0 = f["reverted_at"]
        ax.annotate("", xy=(t0 + row["seconds"], 0.7), xytext=(t0, 0.7), xycoords=trans,
                    arrowprops={"arrowstyle": "<->", "color": "#2ca02c"})  # fmt: skip
        ax.text(t0 + row["seconds"] / 2, 0.72, f"TTR {row['seconds']:.1f}s", transform=trans,
                ha="center", va="bottom", fontsize=8, color="#2ca02c")  # fmt: skip


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _secs(v: float | None) -> str:
    return "never" if v is None else f"{v:.2f}s"


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page (the picture inlined as base64 PNG)."""
    png = base64.b64encode(timeline_png(report)).decode()
    e = html.escape
    verdict = report["verdict"]
    checks = _table(
        ["check", "status", "message"],
        [
            [
                e(c["name"]),
                f'<b style="color:{_STATUS_COLORS[c["status"]]}">{c["status"]}</b>',
                e(c["message"]),
            ]
            for c in report["checks"]
        ],
    )
    faults = _table(
        ["fault", "injected", "reverted", "TTD (own window)", "detected by", "TTR: SLO back",
         "TTR: alerts resolved"],
        [
            [
                e(f["name"]),
                f"{f['injected_at']:.2f}s",
                "-" if f["reverted_at"] is None else f"{f['reverted_at']:.2f}s",
                _secs(d["seconds"])
                + ("" if d["window_end"] is None else f" (to t={d['window_end']:.2f}s)"),
                e(d["by"] or "-"),
                "-" if rec is None else e(slo_text(rec)),
                "not reverted" if rec is None else e(alerts_text(rec)),
            ]
            for f, d, rec in fault_rows(report)
        ],
    )  # fmt: skip
    alerts = _table(
        ["t", "alert", "state"],
        [[f"{a['t']:.2f}s", e(a["alert"]), e(a["state"])] for a in report["alerts"]],
    )
    hits = [d for d in report["detections"] if d["kind"] == "detector.hit"]
    stacks = "".join(
        f"<details><summary>{d['t']:.2f}s {e(d['name'])}: "
        f"{e(str(d['detail'].get('top_frame') or d['detail'].get('line', '')))}</summary>"
        f"<pre>{e(str(d['detail'].get('stack', '')))}</pre></details>"
        for d in hits
    )
    budget = report["budget"]
    budget_html = "" if budget is None else f"<p>budget: <code>{e(str(budget))}</code></p>"
    figures = report.get("figures") or {}
    cols = ["normal", "worst", "recovered"]
    cols += sorted({k for row in figures.values() for k in row} - set(cols))
    figures_html = (
        _table(
            ["metric", *cols],
            [
                [e(metric)] + ["-" if row.get(c) is None else f"{row[c]:.4g}" for c in cols]
                for metric, row in figures.items()
            ],
        )
        if figures
        else "<p>none</p>"
    )
    seed = report.get("seed_comparison")
    seed_html = "<p>no seed figures for this scenario (fixtures/seed_figures.json)</p>"
    if seed:
        seed_html = f"<p>{e(seed['source'])}</p>" + _table(
            ["metric", "seed metric", *SEED_COLUMNS],
            [
                [e(r["metric"]), e(r["seed_metric"])] + [seed_num(v) for v in seed_cells(r)]
                for r in seed["rows"]
            ],
        )
        if seed.get("note"):
            seed_html += f"<p><i>{e(seed['note'])}</i></p>"
    rules = report.get("rules")
    rules_html = "<p>no alert watcher in this run</p>"
    if rules is not None:
        fired = {a["alert"] for a in report["alerts"] if a["state"] == "firing"}
        rules_html = _table(
            ["rule", "this run"],
            [[e(r), "fired" if r in fired else "quiet"] for r in rules],
        )
    notes = "".join(f"<li>{e(n)}</li>" for n in report.get("notes") or [])
    title = report.get("title")
    story = "" if not title else f"<p><b>{e(title)}</b> ({e(str(report.get('seed', '')))})</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>faultline: {e(report["scenario"])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 14px; }}
pre {{ background: #f6f6f6; padding: 8px; font-size: 12px; }}
</style></head><body>
<h1>{e(report["scenario"])}:
<span style="color:{_STATUS_COLORS[verdict]}">{verdict.upper()}</span></h1>
{story}<p>run {e(str(report["run_id"]))}, generated {e(report["generated_at"])},
schema_version {report["schema_version"]}</p>
<img alt="incident timeline" src="data:image/png;base64,{png}">
<h2>Figures</h2>{figures_html}
<h2>Seed vs reproduction</h2>{seed_html}
<h2>Faults</h2>{faults}{budget_html}
<h2>Checks</h2>{checks}
<h2>Alert transitions</h2>{alerts}
<h2>Alerting rules loaded</h2>{rules_html}
<h2>Detector hits</h2>{stacks or "<p>none</p>"}
<h2>Notes</h2>{f"<ul>{notes}</ul>" if notes else "<p>none</p>"}
</body></html>
"""
