"""A short rich table of a report for the terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "SEED_COLUMNS",
    "alerts_text",
    "fault_rows",
    "render_terminal",
    "seed_cells",
    "seed_num",
    "slo_text",
]

_STYLE = {"passed": "green", "failed": "bold red", "unknown": "yellow"}


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}s"


def fault_rows(
    report: dict[str, Any],
) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]]:
    """(fault, its TTD row, its TTR row or None when never reverted), in injection order."""
    ttr = iter(report["ttr"])  # one row per reverted injection, in the same order
    return [
        (f, d, None if f["reverted_at"] is None else next(ttr, None))
        for f, d in zip(report["faults"], report["ttd"], strict=True)
    ]


def slo_text(rec: dict[str, Any]) -> str:
    """The scenario's recovery checks counted from this revert, or why there are none."""
    if not rec["slo"]:
        return "none of the scenario's recovery checks counts from this revert (see the checks)"
    return "; ".join(
        f"{_secs(r['seconds']) if r['seconds'] is not None else 'not back'} {r['check']} "
        f"({r['status']})"
        for r in rec["slo"]
    )


def alerts_text(rec: dict[str, Any]) -> str:
    """When the alerts of the fault's window resolved; those still firing when the run
    stopped observing are said to resolve beyond the run, if ever."""
    alerts = rec["alerts"]
    if not alerts:
        return "n/a (no alert fired in the fault's window)"
    done = [a for a in alerts if a["resolved_after_s"] is not None]
    names = [a["alert"] for a in alerts]

    def label(a: dict[str, Any]) -> str:
        # One alert firing for several members: say which.
        if names.count(a["alert"]) == 1 or "instance" not in a["labels"]:
            return str(a["alert"])
        return f"{a['alert']}{{{a['labels']['instance']}}}"

    parts = []
    if rec["seconds"] is not None:
        parts.append(f"all {len(alerts)} after {rec['seconds']:.2f}s")
    elif done:
        parts.append(
            ", ".join(f"{label(a)} {a['resolved_after_s']:.2f}s" for a in done) + " after revert"
        )
    if rec["unresolved"]:
        parts.append(
            f"still firing {rec['observed_after_s']:.1f}s after the revert when the run ended "
            f"(resolution beyond the run): {', '.join(rec['unresolved'])}"
        )
    return "; ".join(parts)


def render_terminal(report: dict[str, Any], console: Console | None = None) -> None:
    """Print the verdict, TTD and both TTRs per fault, one row per check, the figures
    and the seed-vs-reproduction table."""
    # Piped output (CI logs, `faultline run`'s pytest) would otherwise wrap at 80 columns.
    console = console or Console(width=None if Console().is_terminal else 120)
    verdict = report["verdict"]
    console.print(
        f"[bold]{report['scenario']}[/bold]: [{_STYLE[verdict]}]{verdict.upper()}[/]"
        + (f"  (run {report['run_id']})" if report.get("run_id") else "")
    )
    for _fault, row, rec in fault_rows(report):
        by = f" by {row['by']}" if row["by"] else ""
        own = "" if row["window_end"] is None else f" (own window to t={row['window_end']:.2f}s)"
        console.print(f"  {row['fault']}: TTD {_secs(row['seconds'])}{by}{own}", highlight=False)
        if rec is None:
            console.print("    TTR: not reverted", highlight=False)
            continue
        console.print(f"    TTR, SLO back: {slo_text(rec)}", highlight=False)
        console.print(f"    TTR, alerts resolved: {alerts_text(rec)}", highlight=False)
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
    seed = report.get("seed_comparison")
    if seed:
        console.print(seed_table(seed))


def seed_table(seed: dict[str, Any]) -> Table:
    """Seed vs reproduction: before -> worst -> after of each, then worst and after as
    ratios to before (the comparable part: a fleet against one machine)."""
    table = Table(
        title=f"seed vs reproduction: {seed['source']}", show_header=True, header_style="bold"
    )
    table.add_column("metric")
    table.add_column("seed before → worst → after", justify="right")
    table.add_column("run before → worst → after", justify="right")
    table.add_column("worst/before seed | run", justify="right")
    table.add_column("after/before seed | run", justify="right")
    for row in seed["rows"]:
        c = [seed_num(v) for v in seed_cells(row)]
        table.add_row(
            row["metric"],
            " → ".join(c[0:3]),
            " → ".join(c[3:6]),
            f"{c[6]} | {c[7]}",
            f"{c[8]} | {c[9]}",
        )
    if seed.get("note"):
        table.caption = seed["note"]
        table.caption_justify = "left"
    return table


def seed_num(value: float | None) -> str:
    """A seed-table number: five significant digits (99.992 %), thousands grouped."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.5g}"


SEED_COLUMNS = (
    "seed before",
    "seed worst",
    "seed after",
    "run before",
    "run worst",
    "run after",
    "seed worst/before",
    "run worst/before",
    "seed after/before",
    "run after/before",
)


def seed_cells(row: dict[str, Any]) -> list[float | None]:
    """The numbers of one seed-table row, in :data:`SEED_COLUMNS` order."""
    s, m, sr, mr = row["seed"], row["measured"], row["seed_ratio"], row["measured_ratio"]
    return [
        s["before"], s["worst"], s["after"], m["before"], m["worst"], m["after"],
        sr["worst"], mr["worst"], sr["after"], mr["after"],
    ]  # fmt: skip


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
