"""faultline: chaos and fault-reproduction scenarios with measured detection and recovery.

Subcommands: doctor, list, run, report, coverage, clean, observe, compare, calibrate, init.

Exit codes: 0 success; 1 a scenario failed or something was left behind;
2 bad input (names the field); 130/143 interrupted (everything reverted).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import compare, coverage_cmd, doctor, init_cmd, observe_cmd, thresholds
from harness.config import (
    BACKENDS,
    IMPLEMENTED_BACKENDS,
    env_setting,
    parse_backend,
    parse_bool,
    parse_budget_scale,
    parse_dir,
)
from harness.errors import ConfigError, HarnessError
from harness.kube import cmd as cluster_cmd
from harness.run import clean_runs, state_root

__all__ = ["main", "scenario_files", "scenarios_dir"]


def scenarios_dir() -> Path:
    """``$FAULTLINE_SCENARIOS``, else ``scenarios/`` beside the harness package."""
    default = Path(__file__).resolve().parent.parent / "scenarios"
    return env_setting("FAULTLINE_SCENARIOS", parse_dir, default)


def scenario_files() -> dict[str, Path]:
    """Scenario name (``etcd-tls-storm``) -> file (``test_etcd_tls_storm.py``)."""
    d = scenarios_dir()
    return {p.stem.removeprefix("test_").replace("_", "-"): p for p in sorted(d.glob("test_*.py"))}


def _summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def cmd_doctor(args: argparse.Namespace) -> int:
    findings = doctor.diagnose()
    width = max(len(f.name) for f in findings)
    for f in findings:
        mark = "ok     " if f.ok else "MISSING"
        print(f"{mark} {f.name:<{width}}  [{f.needed_by}] {f.detail}")
        if not f.ok:
            print(f"        {'':<{width}}  fix: {f.fix}")
    ready = doctor.local_backend_ready(findings)
    print("\nlocal backend: " + ("ready" if ready else "NOT ready (see the fixes above)"))
    return 0 if ready else 1


def cmd_list(args: argparse.Namespace) -> int:
    files = scenario_files()
    if not files:
        print(f"no scenarios in {scenarios_dir()}")
        return 1
    width = max(len(n) for n in files)
    for name, path in files.items():
        print(f"{name:<{width}}  {_summary(path)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    files = scenario_files()
    if args.scenario not in files:
        known = ", ".join(files) or "(none)"
        raise ConfigError("SCENARIO", f"unknown scenario {args.scenario!r}", expected=known)
    # An option beats its environment variable; either is checked before pytest starts.
    if args.budget_scale is not None:
        scale = parse_budget_scale(args.budget_scale, "--budget-scale")
    else:
        scale = env_setting("FAULTLINE_BUDGET_SCALE", parse_budget_scale, 1.0)
    backend, where = args.backend, "--backend"
    if backend is None:
        backend, where = (
            env_setting("FAULTLINE_BACKEND", parse_backend, "local"),
            "FAULTLINE_BACKEND",
        )
    if backend not in IMPLEMENTED_BACKENDS:
        raise ConfigError(
            where,
            f"the {backend} backend is not implemented yet",
            expected=" | ".join(IMPLEMENTED_BACKENDS),
        )
    if backend == "kubernetes":
        from harness.backends.kubernetes import CLUSTER_FIX, find_kubeconfig

        kubeconfig = find_kubeconfig()
        if kubeconfig is None or not kubeconfig.is_file():
            raise ConfigError(
                where,
                f"no Kubernetes cluster: no kubeconfig{f' at {kubeconfig}' if kubeconfig else ''}",
                expected=f"a cluster: {CLUSTER_FIX}",
            )
    keep = args.keep_artifacts or env_setting("FAULTLINE_KEEP_ARTIFACTS", parse_bool, False)
    report_dir = Path(
        args.report_dir or env_setting("FAULTLINE_REPORT_DIR", lambda v, _: v, "faultline-reports")
    ).resolve()
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(files[args.scenario]),
        "-p",
        "no:cacheprovider",
        f"--backend={backend}",
        f"--report-dir={report_dir}",
        f"--budget-scale={scale}",
        "-v",
        "-s" if args.verbose else "-q",
        # Live progress: components ready, phases, faults injected and reverted, checks.
        "-o",
        "log_cli=true",
        "--log-cli-level=INFO",
        "--log-cli-format=%(asctime)s %(message)s",
        "--log-cli-date-format=%H:%M:%S",
        "--rootdir",
        str(scenarios_dir().parent),
    ]
    if keep:
        cmd.append("--keep-artifacts")
    print(f"faultline: running {args.scenario} on the {backend} backend", flush=True)
    # pytest gets the signals too (same process group) and reverts every fault;
    # we only wait for it and pass its exit status on.
    started = time.time()
    proc = subprocess.Popen(cmd)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:
            print("faultline: interrupted, reverting faults...", file=sys.stderr, flush=True)
    # Only this invocation's reports: the directory may hold earlier runs' too.
    reports = sorted(
        (p for p in report_dir.glob("*/*/report.json") if p.stat().st_mtime >= started),
        key=lambda p: p.stat().st_mtime,
    )
    if reports:
        from harness.report import render_terminal

        for rpt in reports:
            render_terminal(json.loads(rpt.read_text()))
            print(f"report: {rpt.parent / 'report.html'}")
    verdict = {0: "PASSED", 1: "FAILED", 130: "INTERRUPTED", 143: "TERMINATED"}.get(code, "ERROR")
    if code == 0 and not reports:
        # pytest passes a run whose every test skipped (e.g. no Docker engine): not a pass.
        verdict, code = "SKIPPED (nothing ran: see the skip reason above)", 1
    print(f"faultline: {args.scenario}: {verdict} (exit {code})")
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import load_report, render_terminal

    render_terminal(load_report(Path(args.path)))  # a report that fails the schema: exit 2
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    reports = clean_runs(run_id=args.run)
    if not reports:
        print(f"nothing to clean under {state_root()}")
        return 0
    failed = False
    for r in reports:
        status = "cleaned" if not r.errors else "LEFT BEHIND: " + "; ".join(r.errors)
        print(f"run {r.run_id}: {r.reverted} change(s) reverted; {status}")
        failed |= bool(r.errors)
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="faultline",
        description=__doc__.splitlines()[0],
        epilog=init_cmd.USAGE_EPILOG + "\n\n" + observe_cmd.USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show component output")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="what is installed, what each backend needs").set_defaults(
        fn=cmd_doctor
    )
    sub.add_parser("list", help="list the scenarios").set_defaults(fn=cmd_list)
    r = sub.add_parser("run", help="run one scenario and print its report")
    r.add_argument("scenario", metavar="SCENARIO", help="a name from `faultline list`")
    r.add_argument("--backend", choices=BACKENDS, help="default: $FAULTLINE_BACKEND, else local")
    r.add_argument("--report-dir", help="default: $FAULTLINE_REPORT_DIR, else faultline-reports")
    r.add_argument("--budget-scale", help="1 to 100; default: $FAULTLINE_BUDGET_SCALE, else 1")
    r.add_argument("--keep-artifacts", action="store_true", help="also: FAULTLINE_KEEP_ARTIFACTS=1")
    r.set_defaults(fn=cmd_run)
    rep = sub.add_parser("report", help="print a report.json as a table")
    rep.add_argument("path", metavar="PATH", help="report.json or its directory")
    rep.set_defaults(fn=cmd_report)
    coverage_cmd.register(sub)
    c = sub.add_parser("clean", help="reap runs whose owner is gone (after a SIGKILL)")
    c.add_argument("--run", help="only this run id")
    c.set_defaults(fn=cmd_clean)
    observe_cmd.register(sub)
    cluster_cmd.register(sub)
    compare.register(sub)
    thresholds.register(sub)
    init_cmd.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        code: int = args.fn(args)
        return code
    except ConfigError as err:
        print(f"faultline: error: {err}", file=sys.stderr)
        return 2
    except HarnessError as err:
        print(f"faultline: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
