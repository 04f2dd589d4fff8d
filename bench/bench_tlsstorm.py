"""tlsstorm efficiency: full TLS handshakes per generator CPU-second.

    python bench/bench_tlsstorm.py [--duration 5] [--concurrency 16] [--no-etcd]

1. `openssl speed ecdhp256 ecdhx25519 ecdsap256` gives this machine's per-core
   ceilings. Per handshake (TLS 1.3, P-256 or X25519 key exchange, ECDSA P-256
   server certificate) the client must do one ECDH and one ECDSA verify, so the
   client-side ceiling is 1 / (1/ecdh_per_s + 1/verify_per_s) handshakes per
   CPU-second, with the ECDH figure of the curve in use.
2. tlsstorm (cpu 1) against tlssink, a Go TLS listener (cpu 0): handshakes per
   tlsstorm CPU-second, and the ratio to the ceiling (goal >= 60%), for the
   lean TLS 1.3 client (the default; its key shares reused for up to 1 s, so
   per handshake it does exactly the ceiling's ECDH + verify), the lean client
   with a fresh key share per handshake (one more key generation than the
   ceiling counts) and crypto/tls (TLS 1.3 and 1.2). Each row has its own
   tlssink, which reports how many handshakes it completed (it checks each
   client Finished): the server's count is printed next to the client's.
   For reference, `openssl s_time -new` (OpenSSL's own handshake client) is
   measured the same way, in handshakes per CPU-second of the client process.
3. If /usr/bin/etcd exists: a throwaway single etcd member with client-cert TLS
   (openssl-made certificates), and the handshake rate reached against it.

Prints figures only, asserts nothing. Every process is killed and every temp
dir removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.gobuild import build

GOAL = 0.60
ETCD = Path("/usr/bin/etcd")


def pin(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu)]
    return []


def openssl_speed(seconds: int = 2) -> dict[str, float]:
    out = subprocess.run(
        ["openssl", "speed", "-seconds", str(seconds), "ecdhp256", "ecdhx25519", "ecdsap256"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    ecdsa = re.search(r"256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", out)
    ecdh = re.search(r"256 bits ecdh \(nistp256\)\s+\S+\s+([\d.]+)", out)
    x25519 = re.search(r"253 bits ecdh \(X25519\)\s+\S+\s+([\d.]+)", out)
    if not ecdsa or not ecdh or not x25519:
        raise RuntimeError(f"cannot parse openssl speed output:\n{out}")
    return {
        "ecdsa_sign_per_s": float(ecdsa.group(1)),
        "ecdsa_verify_per_s": float(ecdsa.group(2)),
        "ecdh_per_s": float(ecdh.group(1)),
        "x25519_per_s": float(x25519.group(1)),
    }


def storm(tlsstorm: Path, target: str, duration: int, conc: int, *extra: str) -> dict[str, Any]:
    cmd = [*pin(1), str(tlsstorm), "--target", target, f"--duration={duration}s",
           f"--concurrency={conc}", *extra]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"tlsstorm failed ({res.returncode}): {res.stderr}")
    summary: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return summary


def openssl_s_time(addr: str, seconds: int) -> tuple[float, float]:
    """(handshakes, handshakes per client CPU-second) of ``openssl s_time -new``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [*pin(1), "openssl", "s_time", "-connect", addr, "-new", "-time", str(seconds)],
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    ).stdout  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m = re.search(r"(\d+) connections in [\d.]+ real seconds", out)
    n = float(m.group(1)) if m else 0.0
    return n, (n / cpu if cpu > 0 else 0.0)


@contextlib.contextmanager
def sink(tlssink: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """A tlssink on cpu 0: its address, and once stopped, what it served."""
    served: dict[str, int] = {}
    cmd = [*pin(0), str(tlssink), "--addr", "127.0.0.1:0", "--duration", "10m"]
    proc = subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())["addr"], served
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        served.update(json.loads(out.strip().splitlines()[-1]))
    finally:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def started(cmd: list[str], **kw: Any) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(cmd, text=True, **kw)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def openssl_pki(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=bench-ca")  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(ext)
        run("req", *ec, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "1",
            "-extfile", f"{name}.ext")  # fmt: skip


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.1)
    return False


def bench_etcd(tlsstorm: Path, duration: int, conc: int) -> dict[str, Any] | None:
    if not ETCD.exists():
        print("etcd: /usr/bin/etcd not installed, skipped")
        return None
    with tempfile.TemporaryDirectory(prefix="bench-etcd-") as tmp:
        d = Path(tmp)
        openssl_pki(d)
        cport, pport = free_port(), free_port()
        client_url, peer_url = f"https://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
        cmd = [*pin(0), str(ETCD), "--name", "bench", "--data-dir", str(d / "data"),
               "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
               "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
               "--initial-cluster", f"bench={peer_url}", "--cert-file", str(d / "server.pem"),
               "--key-file", str(d / "server-key.pem"), "--trusted-ca-file", str(d / "ca.pem"),
               "--client-cert-auth", "--log-level", "error"]  # fmt: skip
        with started(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
            if not wait_port(cport, 15):
                print("etcd: did not open its client port, skipped")
                return None
            return storm(
                tlsstorm, f"127.0.0.1:{cport}", duration, conc, "--curves=p256",
                f"--cert={d / 'client.pem'}", f"--key={d / 'client-key.pem'}",
            )  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--no-etcd", action="store_true")
    ns = ap.parse_args()
    tlsstorm, tlssink = build("tlsstorm"), build("tlssink")

    speed = openssl_speed()
    verify = speed["ecdsa_verify_per_s"]
    ceilings = {
        curve: 1 / (1 / speed[key] + 1 / verify)
        for curve, key in (("p256", "ecdh_per_s"), ("x25519", "x25519_per_s"))
    }
    server_ceiling = 1 / (1 / speed["ecdh_per_s"] + 1 / speed["ecdsa_sign_per_s"])
    print(
        f"openssl speed (1 core): ecdh p256 {speed['ecdh_per_s']:.0f}/s, x25519 "
        f"{speed['x25519_per_s']:.0f}/s, ecdsa p256 sign {speed['ecdsa_sign_per_s']:.0f}/s "
        f"verify {verify:.0f}/s"
    )
    print(
        f"ceiling per CPU-second: client (ecdh+verify) p256 {ceilings['p256']:.0f}, x25519 "
        f"{ceilings['x25519']:.0f} handshakes; server (ecdh+sign) p256 {server_ceiling:.0f}"
    )

    results: dict[str, Any] = {"openssl": speed, "client_ceilings_per_cpu_s": ceilings}
    for label, curve, extra in (
        ("tls1.3 p256 lean", "p256", ["--tls=1.3"]),
        ("tls1.3 p256 lean fresh keys", "p256", ["--tls=1.3", "--fresh-keys"]),
        ("tls1.3 p256 crypto/tls", "p256", ["--tls=1.3", "--client=stdlib"]),
        ("tls1.2 p256 crypto/tls", "p256", ["--tls=1.2", "--client=stdlib"]),
        ("tls1.3 x25519 lean", "x25519", ["--tls=1.3"]),
        ("tls1.3 x25519 crypto/tls", "x25519", ["--tls=1.3", "--client=stdlib"]),
    ):
        with sink(tlssink) as (addr, served):
            s = storm(tlsstorm, addr, ns.duration, ns.concurrency, f"--curves={curve}", *extra)
        lat = s["handshake_latency_ms"]
        per_cpu = float(s["handshakes_per_cpu_s"])
        ratio = per_cpu / ceilings[curve]
        verdict = "ok" if ratio >= GOAL else "BELOW"
        print(
            f"tlssink {label:<27} {s['handshakes_per_s']:>5.0f} hs/s, {per_cpu:>5.0f} hs per "
            f"generator CPU-s = {ratio:5.1%} of the {curve} client ceiling (goal {GOAL:.0%}: "
            f"{verdict}); p50/p99 {lat['p50']}/{lat['p99']} ms, errors {s['errors_total']}, "
            f"server completed {served['handshakes']} of {s['handshakes']}"
        )
        results[label] = {**s, "server_completed": served["handshakes"]}
    with sink(tlssink) as (addr, _):
        n, per_cpu = openssl_s_time(addr, ns.duration)
    print(
        f"reference: openssl s_time -new: {n / ns.duration:.0f} hs/s, {per_cpu:.0f} hs per "
        f"client CPU-s = {per_cpu / ceilings['x25519']:5.1%} of the x25519 client ceiling "
        "(it offers X25519 first)"
    )
    results["openssl_s_time_per_cpu_s"] = per_cpu
    if not ns.no_etcd:
        e = bench_etcd(tlsstorm, ns.duration, ns.concurrency)
        if e is not None:
            print(
                f"etcd 1 member (mTLS, p256): {e['handshakes_per_s']:.0f} hs/s, "
                f"{e['handshakes_per_cpu_s']:.0f} per generator CPU-s, "
                f"p99 {e['handshake_latency_ms']['p99']} ms, errors {e['errors']}"
            )
            results["etcd"] = e
    print(json.dumps({"bench": "tlsstorm", **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
