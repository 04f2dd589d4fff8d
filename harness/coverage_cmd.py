"""``faultline coverage REPORT_DIR``: alert coverage over stored ``report.json`` files.

Reads every ``REPORT_DIR/**/report.json`` (each checked against the schema: a
bad one exits 2 naming the file and the field), keeps the newest run of each
scenario (``--all-runs``: every run), prints which loaded rules fired where,
which stayed quiet, and which never fired anywhere, and writes
``coverage.json`` and ``coverage.html`` into REPORT_DIR (``--no-write``: print
only). Exit 0 whatever the coverage: it is a measurement, not a gate.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.coverage import aggregate, latest_per_scenario, render_text, write_coverage
from harness.errors import ConfigError

__all__ = ["cmd_coverage", "register"]


def cmd_coverage(args: argparse.Namespace) -> int:
    from harness.report import load_report

    root = Path(args.report_dir)
    if not root.is_dir():
        raise ConfigError("REPORT_DIR", f"{root} is not a directory", expected="a report dir")
    paths = sorted(root.glob("**/report.json"))
    if not paths:
        raise ConfigError("REPORT_DIR", f"no report.json under {root}", expected="a report dir")
    reports: list[Any] = [load_report(p) for p in paths]
    chosen = reports if args.all_runs else latest_per_scenario(reports)
    cov = aggregate(chosen)
    print("\n".join(render_text(cov)))
    if not args.no_write:
        json_path, html_path = write_coverage(root, cov)
        print(f"coverage: {json_path}, {html_path}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``coverage`` to the ``faultline`` subcommands."""
    p = subparsers.add_parser(
        "coverage",
        help="which loaded alert rules fired in which scenarios, and which never fired",
        description=(__doc__ or "").split("\n\n", 1)[1].replace("``", "").strip(),
    )
    p.add_argument("report_dir", metavar="REPORT_DIR", help="e.g. faultline-reports")
    p.add_argument("--all-runs", action="store_true", help="every run, not the newest of each")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.set_defaults(fn=cmd_coverage)
