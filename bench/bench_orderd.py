"""orderd throughput with every bug off, pinned to one core, measured with wrk.

    python bench/bench_orderd.py [--duration 5] [--connections 32]

Prints req/s and latency for GET /ping and POST /orders (goal: >= 2000 req/s
each on one core). Needs wrk (`apt-get install -y wrk`) and taskset; orderd
is built with harness.gobuild. Prints figures only, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.gobuild import build

GOAL_RPS = 2000.0
POST_LUA = """wrk.method = "POST"
wrk.body = '{"sku":"bench","qty":1}'
wrk.headers["Content-Type"] = "application/json"
"""


def pin(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu)]
    return []


def run_wrk(url: str, script: Path | None, duration: int, conns: int) -> dict[str, float | str]:
    cmd = [*pin(1), "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run(
        [*cmd, url], capture_output=True, text=True, timeout=duration + 60, check=False
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res: dict[str, float | str] = {"req_per_s": float(rps.group(1)) if rps else 0.0}
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+(\S+)", out, re.M)
        res[f"p{q}"] = m.group(1) if m else "?"
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non_2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ns = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 3
    binary = build("orderd")
    proc = subprocess.Popen(
        [*pin(0), str(binary), "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
         "--admin-addr", "127.0.0.1:0", "--log-level", "error"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ev = json.loads(proc.stdout.readline())
        with urllib.request.urlopen(f"http://{ev['admin']}/bugs", timeout=5) as resp:
            switches = json.load(resp)
        on = [name for name, st in switches.items() if st["enabled"]]
        print(f"orderd pid {proc.pid} pinned to cpu 0, wrk to cpu 1; bugs on: {on or 'none'}")
        with tempfile.TemporaryDirectory() as tmp:
            lua = Path(tmp) / "post.lua"
            lua.write_text(POST_LUA)
            base = f"http://{ev['http']}"
            rows = {
                "GET /ping": run_wrk(f"{base}/ping", None, ns.duration, ns.connections),
                "POST /orders": run_wrk(f"{base}/orders", lua, ns.duration, ns.connections),
            }
        print(f"{'route':<14} {'req/s':>10} {'p50':>9} {'p99':>9} {'non-2xx':>8}  goal")
        for route, r in rows.items():
            rps = float(r["req_per_s"])
            verdict = "ok" if rps >= GOAL_RPS else "BELOW"
            print(
                f"{route:<14} {rps:>10.0f} {r['p50']!s:>9} {r['p99']!s:>9} "
                f"{int(float(r['non_2xx'])):>8}  >= {GOAL_RPS:.0f}: {verdict}"
            )
        print(json.dumps({"bench": "orderd", "one_core": True, "results": rows}))
    finally:
        proc.kill()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
