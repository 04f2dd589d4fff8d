"""``calibration.html``: baseline quantiles against the candidate thresholds, and TTD per
threshold for each fault intensity (matplotlib, PNG inlined), with the tables."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from harness.report.html import _table
from harness.thresholds.rulefile import format_duration, format_threshold

if TYPE_CHECKING:
    from harness.thresholds.cli import Calibration

__all__ = ["calibration_png", "write_html"]


def calibration_png(cal: Calibration) -> bytes:
    rec = cal.recommended
    for_s = rec.candidate.for_s if rec is not None else cal.rule.for_s
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    values = [w.values() for w in [*cal.baseline, *cal.faults]]
    labels = [w.label for w in [*cal.baseline, *cal.faults]]
    top.boxplot(values, orientation="horizontal", whis=(0, 100), tick_labels=labels)
    top.axvline(cal.rule.threshold, color="#7f7f7f", ls="--", label="current threshold")
    top.axvline(cal.limit, color="#f0a030", ls=":", label="margin limit")
    if rec is not None:
        top.axvline(rec.candidate.threshold, color="#d62728", label="recommended")
    top.set_title(f"{cal.rule.name}: {cal.rule.lhs[:70]}... per 1 s evaluation", fontsize=9)
    top.legend(fontsize=8)
    rows = sorted((e for e in cal.evaluations if e.candidate.for_s == for_s),
                  key=lambda e: e.candidate.threshold)  # fmt: skip
    xs = [e.candidate.threshold for e in rows]
    for w in cal.faults:
        bottom.plot(xs, [e.ttd.get(w.label) for e in rows], marker="o", ms=3, label=w.label)
    fps = [x for x, e in zip(xs, rows, strict=True) if e.false_positives]
    if fps:
        bottom.scatter(fps, [0] * len(fps), marker="x", color="#d62728",
                       label="false positive on the baseline")  # fmt: skip
    bottom.set_xlabel("threshold")
    bottom.set_ylabel(f"TTD (s), for: {format_duration(for_s)}")
    bottom.legend(fontsize=8)
    bottom.grid(alpha=0.3)
    if rec is not None:
        bottom.axvline(rec.candidate.threshold, color="#d62728")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_html(cal: Calibration, path: Path) -> Path:
    e = html.escape
    png = base64.b64encode(calibration_png(cal)).decode()
    rec = cal.recommended
    safe = sorted((x for x in cal.evaluations if x.safe and x.detected),
                  key=lambda x: (-x.detected, x.mean_ttd))[:15]  # fmt: skip
    table = _table(
        ["threshold", "for", "false positives", *[w.label for w in cal.faults]],
        [
            [
                e(format_threshold(x.candidate.threshold))
                + (" <b>(recommended)</b>" if x is rec else ""),
                format_duration(x.candidate.for_s),
                str(x.false_positives),
                *[
                    "-" if x.ttd.get(w.label) is None else f"{x.ttd[w.label]:.0f}s"
                    for w in cal.faults
                ],
            ]
            for x in safe
        ],
    )
    verdict = (
        "nothing safe to recommend"
        if rec is None
        else f"{e(cal.rule.op)} {format_threshold(rec.candidate.threshold)} for "
        f"{format_duration(rec.candidate.for_s)} (was {format_threshold(cal.rule.threshold)} for "
        f"{format_duration(cal.rule.for_s)})"
    )
    path.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>faultline calibrate: {e(cal.rule.name)}</title>
<style>body {{ font-family: sans-serif; margin: 2em; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; font-size: 14px; }}</style></head><body>
<h1>{e(cal.rule.name)}: {verdict}</h1>
<p>expression <code>{e(cal.rule.lhs)} {e(cal.rule.op)} x</code>; margin limit
{format_threshold(cal.limit)}; promtool test: {e(str(cal.promtool_ok))};
verification: {e(json.dumps(cal.verify))}</p>
<img alt="calibration" src="data:image/png;base64,{png}">
<h2>Safe candidates (best first)</h2>{table}
</body></html>
""")
    return path
