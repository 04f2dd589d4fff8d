"""Wall time of each scenario file on the docker backend next to local, as a ratio.

Each scenario file runs once per backend in its own ``python -m pytest``
subprocess (state dir and report dir in a fresh temp dir), local first. The
wall time covers everything pytest does: images (cached after the first
docker build), components, baseline, faults, recovery, teardown. A scenario
that does not pass on a backend shows its outcome instead of a ratio; the
ratio is only given where both passed. Prints figures; asserts nothing.

Usage: .venv/bin/python bench/bench_scenarios_docker_vs_local.py [SCENARIO ...]
       (default: every scenarios/test_*.py; a SCENARIO is ``etcd-leader-loss``
       or ``test_etcd_leader_loss.py``)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
BACKENDS = ("local", "docker")
# pytest's exit codes that matter here; anything else is shown as its number.
OUTCOMES = {0: "passed", 1: "FAILED", 5: "no tests"}


def scenario_files(names: list[str]) -> list[Path]:
    if not names:
        return sorted(SCENARIOS.glob("test_*.py"))
    files = []
    for n in names:
        stem = n if n.startswith("test_") else "test_" + n.replace("-", "_")
        path = SCENARIOS / (stem if stem.endswith(".py") else stem + ".py")
        if not path.is_file():
            raise SystemExit(f"no scenario file {path}")
        files.append(path)
    return files


def run_once(path: Path, backend: str) -> tuple[float, str]:
    """(wall seconds, outcome) of one pytest subprocess on one backend."""
    with tempfile.TemporaryDirectory(prefix="fl-bench-") as tmp:
        env = {**os.environ, "FAULTLINE_STATE_DIR": f"{tmp}/state"}
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            str(path),
            "--backend",
            backend,
            "-q",
            "-p",
            "no:cacheprovider",
            "--report-dir",
            f"{tmp}/reports",
        ]
        t0 = time.monotonic()
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - t0
    lines = res.stdout.strip().splitlines()
    summary = (lines or [""])[-1]
    outcome = OUTCOMES.get(res.returncode, f"exit {res.returncode}")
    if res.returncode != 0:
        # Why, in pytest's words: its short summary ("FAILED ... - AssertionError: ...").
        for line in [ln for ln in lines if ln.startswith(("FAILED", "ERROR", "E  "))][:12]:
            print(f"      {line[:200]}", flush=True)
    if res.returncode == 0 and "skipped" in summary and "passed" not in summary:
        outcome = "skipped"
    return wall, outcome


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="*", help="scenario names or files (default: all)")
    args = ap.parse_args()
    rows = []
    for path in scenario_files(args.scenarios):
        results = {}
        for backend in BACKENDS:
            wall, outcome = run_once(path, backend)
            results[backend] = (wall, outcome)
            print(f"  {path.stem:<40} {backend:<7} {wall:7.1f} s  {outcome}", flush=True)
        rows.append((path.stem, results))
    print()
    print(f"{'scenario':<40} {'local s':>8} {'docker s':>9} {'docker/local':>13}")
    for stem, results in rows:
        (lw, lo), (dw, do) = results["local"], results["docker"]
        ratio = f"{dw / lw:13.2f}" if lo == do == "passed" else f"{'-':>13}"
        note = "" if lo == do == "passed" else f"  (local {lo}, docker {do})"
        print(f"{stem:<40} {lw:8.1f} {dw:9.1f} {ratio}{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
