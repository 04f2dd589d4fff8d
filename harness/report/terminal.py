"""A short rich table of a report for the terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["render_terminal"]

_STYLE = {"passed": "green", "failed": "bold red", "unknown": "yellow"}


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}s"


def render_terminal(report: dict[str, Any], console: Console | None = None) -> None:
    """Print the verdict, TTD/TTR per fault and one row per check."""
    # Piped output (CI logs, `faultline run`'s pytest) would otherwise wrap at 80 columns.
    console = console or Console(width=None if Console().is_terminal else 120)
    verdict = report["verdict"]
    console.print(
        f"[bold]{report['scenario']}[/bold]: [{_STYLE[verdict]}]{verdict.upper()}[/]"
        + (f"  (run {report['run_id']})" if report.get("run_id") else "")
    )
    ttr = {r["fault"]: r for r in report["ttr"]}
    # The scenario's own recovery measurements (SLO back, writes back...): alerts
    # such as "restarted in the last minute" stay firing by design, so the
    # alert-based TTR alone can read "never" after a full recovery.
    recovered = [
        f"{c['name'].removeprefix('recovered_within:')} {_secs(c['figures'].get('ttr_s'))}"
        for c in report["checks"]
        if c["name"].startswith("recovered_within:")
    ]
    for row in report["ttd"]:
        rec = ttr.get(row["fault"])
        by = f" by {row['by']}" if row["by"] else ""
        if rec is None:
            rec_text = "not reverted"
        elif rec["seconds"] is not None:
            rec_text = f"{rec['seconds']:.2f}s (alerts resolved)"
        elif rec["unresolved"]:
            rec_text = "never (unresolved: " + ", ".join(rec["unresolved"]) + ")"
        else:
            rec_text = "n/a (no alert fired; see the checks)"
        console.print(
            f"  {row['fault']}: TTD {_secs(row['seconds'])}{by}, TTR {rec_text}", highlight=False
        )
    if recovered:
        console.print("  recovered: " + "; ".join(recovered), highlight=False)
    table = Table(show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("status")
    table.add_column("message", overflow="fold")
    for c in report["checks"]:
        table.add_row(c["name"], f"[{_STYLE[c['status']]}]{c['status']}[/]", c["message"])
    console.print(table)
    figures = report.get("figures") or {}
    if figures:
        order = ["normal", "worst", "recovered"]
        keys = {k for row in figures.values() for k in row}
        cols = [c for c in order if c in keys] + sorted(keys - set(order))
        fig_table = Table(show_header=True, header_style="bold")
        fig_table.add_column("metric")
        for c in cols:
            fig_table.add_column(c, justify="right")
        for metric, row in figures.items():
            fig_table.add_row(metric, *(_num(row.get(c)) for c in cols))
        console.print(fig_table)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
