"""``faultline compare BASELINE CANDIDATE``: the same load on two builds, repeated; a verdict.

Both builds run side by side as workloads of one run (each on its own planned
ports). Each repetition loads both at the same time (``--schedule together``,
the default: whatever else the machine is doing hits both builds of a pair
alike) or one after the other in the order A B B A A B B A (``alternate``:
for builds whose own CPU use would slow the other). A repetition is a window
of ``--duration`` whole wall-clock seconds at ``--rate`` per build. With
``together`` one locust per build runs through all the windows, after 2 s of
warm-up that count for nothing, so no locust starts or stops inside a measured
second (that is where the slowest 1 % came from: the other build's locust
importing itself); ``alternate`` starts one per step, each with the same
warm-up. The metrics
(over each build's pooled requests), the 95 % intervals (bootstrap over pairs)
and the verdicts are described in :mod:`harness.compare.stats`. Exit 1 when
any metric regressed beyond its budget, 0 otherwise, 2 on bad input (nothing
started).

Example (orderd, in-memory store)::

    faultline compare ./orderd-old ./orderd-new --port grpc --port admin \\
        --arg=--http-addr={host}:{http} --arg=--grpc-addr={host}:{grpc} \\
        --arg=--admin-addr={host}:{admin} --ready-path /readyz --locustfile orderd_http
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.backends.base import Backend, Probe, ProbeKind, WorkloadSpec
from harness.compare.stats import Budget, MetricResult, Repetition, compare, parse_budget
from harness.config import BACKENDS, IMPLEMENTED_BACKENDS
from harness.errors import ComponentStartError, ConfigError
from harness.load import MAX_RATE, MAX_SECONDS, LoadGenerator, resolve_locustfile
from harness.load.stats import percentile
from harness.run import Run

__all__ = ["CompareConfig", "Outcome", "register", "run_compare"]

log = logging.getLogger(__name__)

_PORT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
MAX_REPEAT = 50
#: Seconds of load before the first measured window, left out of every metric.
WARMUP = 2
#: Seconds after a window's end before its last second is counted (the stats' grace).
SETTLE = 2.5
#: Seconds a locust gets to start its test.
START_TIMEOUT = 60.0
SCHEDULES = ("together", "alternate")


@dataclass(frozen=True)
class CompareConfig:
    baseline: str  # a binary path, or an image name with ``image``
    candidate: str
    args: tuple[str, ...] = ()
    ports: tuple[str, ...] = ("http",)  # the first one is probed and loaded
    image: bool = False
    ready_path: str = "/"
    locustfile: str = "orderd_http"
    rate: float = 100.0
    duration: float = 5.0
    repeat: int = 9
    #: While a budgeted verdict is inconclusive, ``repeat`` more pairs, up to this many
    #: (None: three times ``repeat``, at most MAX_REPEAT; = ``repeat``: never more).
    max_repeat: int | None = None
    budgets: dict[str, Budget] = field(default_factory=lambda: {"p99": Budget(0.05)})
    backend: str = "local"
    schedule: str = "together"  # or "alternate"

    @property
    def most_pairs(self) -> int:
        if self.max_repeat is None:
            return max(self.repeat, min(3 * self.repeat, MAX_REPEAT))
        return self.max_repeat

    def validate(self) -> None:
        """ConfigError naming the flag; nothing is started before this passed."""
        if self.backend not in IMPLEMENTED_BACKENDS:
            raise ConfigError(
                "--backend",
                f"the {self.backend} backend is not implemented yet",
                expected=" | ".join(IMPLEMENTED_BACKENDS),
            )
        for flag, value in (("BASELINE", self.baseline), ("CANDIDATE", self.candidate)):
            if self.image:
                if not value or any(c.isspace() for c in value):
                    raise ConfigError(flag, f"{value!r} is not an image name")
                if self.backend == "local":
                    raise ConfigError("--image", "images need a container backend",
                                      expected="--backend docker")  # fmt: skip
            elif not (os.path.isfile(value) and os.access(value, os.X_OK)):
                raise ConfigError(flag, f"{value!r} is not an executable file",
                                  expected="the path of a binary (or --image)")  # fmt: skip
        if not self.ports or len(set(self.ports)) != len(self.ports):
            raise ConfigError("--port", f"{list(self.ports)}", expected="distinct names")
        for p in self.ports:
            if not _PORT_NAME.match(p):
                raise ConfigError("--port", f"{p!r}", expected="a name like http or admin")
        known = {"host", *self.ports}
        for a in self.args:
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(a) if f is not None}
            except ValueError as err:
                raise ConfigError(
                    "--arg", f"{a!r}: {err}", expected="{port} placeholders"
                ) from None
            unknown = names - known
            if unknown:
                raise ConfigError("--arg", f"{a!r} names {sorted(unknown)}",
                                  expected=f"placeholders among {sorted(known)}")  # fmt: skip
        if self.image and not self.args:
            raise ConfigError("--arg", "with --image, the first --arg is the entrypoint")
        if not self.ready_path.startswith("/"):
            raise ConfigError("--ready-path", f"{self.ready_path!r}", expected="/path")
        resolve_locustfile(self.locustfile, field="--locustfile")
        if not (math.isfinite(self.rate) and 0 < self.rate <= MAX_RATE):
            raise ConfigError("--rate", f"{self.rate}", expected=f"0 < rate <= {MAX_RATE}")
        if not (math.isfinite(self.duration) and 2 <= self.duration <= MAX_SECONDS):
            raise ConfigError("--duration", f"{self.duration}", expected=f"2..{MAX_SECONDS} s")
        if self.schedule not in SCHEDULES:
            raise ConfigError("--schedule", repr(self.schedule), expected=" | ".join(SCHEDULES))
        if not 2 <= self.repeat <= MAX_REPEAT:
            raise ConfigError("--repeat", f"{self.repeat}", expected=f"2..{MAX_REPEAT}")
        if not self.repeat <= self.most_pairs <= MAX_REPEAT:
            raise ConfigError(
                "--max-repeat", f"{self.max_repeat}", expected=f"{self.repeat}..{MAX_REPEAT}"
            )
        windows = self.repeat if self.schedule == "together" else 1
        if _load_seconds(windows, self.duration) > MAX_SECONDS:
            raise ConfigError(
                "--repeat",
                f"{self.repeat} x {self.duration:g}s is one load of more than {MAX_SECONDS:g} s",
                expected="fewer or shorter repetitions",
            )


@dataclass(frozen=True)
class Outcome:
    results: list[MetricResult]
    baseline: list[Repetition]
    candidate: list[Repetition]

    @property
    def regressed(self) -> bool:
        return any(r.verdict == "regression" for r in self.results)

    def render(self) -> str:
        head = (
            f"{'metric':<7} {'baseline':>9} {'candidate':>9} {'unit':<6} {'change':>9}  "
            "[95% interval]  budget  verdict"
        )
        return "\n".join([head, *(r.describe() for r in self.results)])


def _spec(cfg: CompareConfig, backend: Backend, run: Run, name: str, target: str) -> WorkloadSpec:
    p = backend.plan(name, list(cfg.ports))
    values = {"host": p.bind_host, **{n: str(p.port(n)) for n in cfg.ports}}
    args = tuple(a.format(**values) for a in cfg.args)
    return WorkloadSpec(
        name=name,
        command=args if cfg.image else (str(Path(target).resolve()), *args),
        placement=p,
        image=target if cfg.image else None,
        env=run.child_env(name),
        readiness=Probe(ProbeKind.HTTP, cfg.ports[0], path=cfg.ready_path, interval=0.2),
    )


def _order(first: int, pairs: int) -> list[tuple[str, ...]]:
    """The alternate schedule's steps for pairs ``first`` .. ``first + pairs - 1``
    (from 0): A B B A A B B A ..."""
    out: list[tuple[str, ...]] = []
    for i in range(first, first + pairs):
        out += [("baseline",), ("candidate",)] if i % 2 == 0 else [("candidate",), ("baseline",)]
    return out


def _load_seconds(windows: int, duration: float) -> float:
    """How long one locust of :func:`_measure` may run: long enough for the first
    load to outlast the others' start (it is stopped after the last window)."""
    return WARMUP + windows * duration + 2 + START_TIMEOUT


def _measure(
    cfg: CompareConfig,
    run: Run,
    urls: dict[str, str],
    labels: tuple[str, ...],
    windows: int,
    progress: Callable[[str], None],
    *,
    first: int,
    total: int,
) -> dict[str, list[Repetition]]:
    """Load the builds ``labels`` at once, each from its own locust, and measure
    ``windows`` consecutive windows of ``cfg.duration`` seconds common to all of
    them (numbered ``first``.. of ``total`` in the progress lines), after WARMUP
    seconds of load that are left out (the locusts' start, first connections).
    The loads are stopped when the last window is over."""
    length = _load_seconds(windows, cfg.duration)
    loads = {
        label: LoadGenerator(
            run,
            locustfile=resolve_locustfile(cfg.locustfile, field="--locustfile"),
            host=urls[label],
            rate=cfg.rate,
            duration=length,
            name=f"load-{first}-{label}",
            start_timeout=START_TIMEOUT,
        )
        for label in labels
    }
    with contextlib.ExitStack() as stack:
        for load in loads.values():
            stack.enter_context(load)
        t0 = math.ceil(time.time()) + WARMUP
        bounds = [
            (t0 + round(i * cfg.duration), t0 + round((i + 1) * cfg.duration))
            for i in range(windows)
        ]
        for i, (_, end) in enumerate(bounds, 1):
            time.sleep(max(0.0, end + SETTLE - time.time()))
            for label, load in loads.items():
                w = load.window(*bounds[i - 1])
                if w.n == 0:
                    raise ComponentStartError(
                        f"compare: no request of {label} completed in window {i} "
                        f"(locust log {load.log_path})"
                    )
                progress(
                    f"compare: {first + i - 1}/{total} {label}: "
                    f"{w.n} requests, p99 {percentile(w.hist, 0.99)} ms, {w.fail} failed"
                )
    # Stopped: every second laid, late ones included.
    out: dict[str, list[Repetition]] = {}
    for label, load in loads.items():
        out[label] = []
        for start, end in bounds:
            w = load.window(start, end)
            out[label].append(Repetition(w.n, w.fail, float(end - start), w.hist))
    return out


def _pairs(
    cfg: CompareConfig,
    run: Run,
    urls: dict[str, str],
    done: int,
    more: int,
    progress: Callable[[str], None],
) -> dict[str, list[Repetition]]:
    """Pairs ``done + 1`` .. ``done + more`` of repetitions, by the schedule."""
    if cfg.schedule == "together":
        # One load per build for the whole batch, measured in common wall-clock
        # windows: no locust starts or stops inside a measured second.
        both = ("baseline", "candidate")
        return _measure(cfg, run, urls, both, more, progress, first=done + 1, total=done + more)
    out: dict[str, list[Repetition]] = {"baseline": [], "candidate": []}
    steps = _order(done, more)
    for i, labels in enumerate(steps, 2 * done + 1):
        got = _measure(cfg, run, urls, labels, 1, progress, first=i, total=2 * (done + more))
        for label, measured in got.items():
            out[label] += measured
    return out


def _print(line: str) -> None:
    print(line, flush=True)


def run_compare(
    cfg: CompareConfig, backend: Backend, run: Run, *, progress: Callable[[str], None] = _print
) -> Outcome:
    """Start both builds, run the paired repetitions, compute the verdicts; ``progress``
    gets one line per repetition and build."""
    cfg.validate()
    targets = {"baseline": cfg.baseline, "candidate": cfg.candidate}
    reps: dict[str, list[Repetition]] = {"baseline": [], "candidate": []}
    urls = {}
    for label, target in targets.items():
        spec = _spec(cfg, backend, run, f"compare-{label}", target)
        backend.start(spec)
        backend.wait_ready(spec.name, timeout=30)
        urls[label] = spec.placement.external_url(cfg.ports[0])
    try:
        while True:
            done = len(reps["baseline"])
            more = min(cfg.repeat, cfg.most_pairs - done)
            for label, got in _pairs(cfg, run, urls, done, more, progress).items():
                reps[label] += got
            results = compare(reps["baseline"], reps["candidate"], cfg.budgets)
            open_ = [r.metric for r in results if r.verdict == "inconclusive"]
            if not open_ or len(reps["baseline"]) >= cfg.most_pairs:
                break
            progress(
                f"compare: {', '.join(open_)} inconclusive after {len(reps['baseline'])} "
                f"pairs: {min(cfg.repeat, cfg.most_pairs - len(reps['baseline']))} more "
                f"(at most {cfg.most_pairs})"
            )
    finally:
        for label in targets:
            backend.stop(f"compare-{label}")
    return Outcome(results, reps["baseline"], reps["candidate"])


def _config(args: argparse.Namespace) -> CompareConfig:
    budgets = {"p99": Budget(0.05)}
    for text in args.budget or []:
        name, budget = parse_budget(text)
        budgets[name] = budget
    ports = ("http", *(args.port or []))
    return CompareConfig(
        baseline=args.baseline,
        candidate=args.candidate,
        args=tuple(args.arg or []),
        ports=ports,
        image=args.image,
        ready_path=args.ready_path,
        locustfile=args.locustfile,
        rate=args.rate,
        duration=args.duration,
        repeat=args.repeat,
        max_repeat=args.max_repeat,
        budgets=budgets,
        backend=args.backend,
        schedule=args.schedule,
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.pytest_plugin import make_backend

    cfg = _config(args)
    cfg.validate()
    started = time.monotonic()
    print(
        f"faultline compare: {cfg.repeat} pairs (up to {cfg.most_pairs} while inconclusive) "
        f"of {cfg.duration:g}s at {cfg.rate:g} req/s per build, {cfg.schedule}",
        flush=True,
    )
    with Run.open() as run:
        backend = make_backend(cfg.backend, run)
        try:
            outcome = run_compare(cfg, backend, run)
        finally:
            backend.close()
    print(outcome.render())
    print(
        "change: over each build's pooled requests; interval: 95% percentile bootstrap "
        "over pairs (2000 resamples); regression = the whole interval beyond the budget"
    )
    verdict = "REGRESSION" if outcome.regressed else "no regression beyond the budgets"
    print(f"faultline compare: {verdict} ({time.monotonic() - started:.0f}s)")
    return 1 if outcome.regressed else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``compare`` to the ``faultline`` subcommands."""
    p = sub.add_parser(
        "compare",
        help="the same load on two builds, repeated: P50/P99, errors, throughput with "
        "95%% intervals; exit 1 on a regression beyond the budget",
        description=(__doc__ or "").split("\n\n")[1],
    )
    p.add_argument("baseline", metavar="BASELINE", help="binary of the baseline build")
    p.add_argument("candidate", metavar="CANDIDATE", help="binary of the candidate build")
    p.add_argument("--image", action="store_true",
                   help="BASELINE and CANDIDATE are images (container backend); the first "
                   "--arg is the entrypoint")  # fmt: skip
    p.add_argument("--arg", action="append", metavar="ARG",
                   help="an argument of both builds (repeatable); {host} and {PORT} "
                   "(a --port name, or http) are replaced by the planned values")  # fmt: skip
    p.add_argument("--port", action="append", metavar="NAME",
                   help="another port to plan besides http (repeatable)")  # fmt: skip
    p.add_argument("--ready-path", default="/", help="HTTP readiness path on the http port")
    p.add_argument("--locustfile", default="orderd_http",
                   help="built-in name or path of a locustfile (default orderd_http)")  # fmt: skip
    p.add_argument("--rate", type=float, default=100.0, help="requests/s per build (default 100)")
    p.add_argument("--duration", type=float, default=5.0,
                   help="seconds per repetition (default 5)")  # fmt: skip
    p.add_argument("--repeat", type=int, default=9,
                   help="pairs of repetitions (default 9); as many again while a budgeted "
                   "verdict is inconclusive, up to --max-repeat")  # fmt: skip
    p.add_argument("--max-repeat", type=int, default=None, metavar="N",
                   help="at most this many pairs (default 3 x --repeat, at most "
                   f"{MAX_REPEAT}; = --repeat: no more)")  # fmt: skip
    p.add_argument("--schedule", choices=SCHEDULES, default="together",
                   help="together: both builds loaded at once in each repetition (default); "
                   "alternate: A B B A ...")  # fmt: skip
    p.add_argument("--budget", action="append", metavar="METRIC=LIMIT",
                   help="p99=5%% (default), p50=10%%, rps=5%%, errors=0.5pp")  # fmt: skip
    p.add_argument("--backend", choices=BACKENDS, default="local")
    p.set_defaults(fn=cmd_compare)
