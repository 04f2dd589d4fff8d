"""``faultline observe``: run any Go program as a workload, watch its goroutines and output.

The program needs no pprof endpoint, no admin switch and no change. It runs on
the local backend (its own process group and cgroup, tagged, in the run's
ledger) for ``--for`` seconds; meanwhile delve takes a goroutine dump from
outside every second (:mod:`harness.observe.delve`) and its output is scanned
for the runtime's crash and race reports (:mod:`harness.observe.logs`). At the
end of the window the runtime's own SIGQUIT dump is the last, destructive one.
A crash or a global deadlock ends the window early. The findings
(:mod:`harness.observe.program`) are attributed to the program's own code: the
main module read from the binary's build info.

Exit codes: 1 a finding, 0 clean, 2 bad input (the message names the flag),
130 / 143 interrupted (everything stopped and removed).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from harness import gobuild
from harness.backends.base import WorkloadSpec
from harness.backends.local import LocalBackend
from harness.checks import CheckResult, Status
from harness.errors import ConfigError, HarnessError
from harness.load import MAX_RATE, LoadGenerator, resolve_locustfile
from harness.observe import leakprofile
from harness.observe.buildinfo import BuildInfo, ProjectCode, read_buildinfo
from harness.observe.delve import DelveDumper
from harness.observe.goroutines import Dump, parse_dump
from harness.observe.logs import LogDetector
from harness.observe.program import ProgramFinding, ProgramWatch
from harness.report import build_report, write_reports
from harness.run import Run
from harness.timeline import Timeline
from harness.wait import WaitTimeout, wait_until

__all__ = ["DUMP_EVERY_S", "USAGE_EPILOG", "ObserveArgs", "parse_args", "register"]

#: For ``faultline --help``: the other way in, any Go program as it is.
USAGE_EPILOG = """\
observing any Go program (no change to it, no pprof endpoint needed):
  faultline observe [--race] [--for SECONDS] [--load LOCUSTFILE --rate N] -- PROGRAM ARGS...
  faultline observe --go-package DIR [--race] [--for SECONDS]
  exit 1 on a finding (deadlock, leak, race, crash), 0 clean, 2 bad input;
  README: "Observing any Go program"."""

log = logging.getLogger(__name__)

NAME = "prog"
DUMP_EVERY_S = 1.0
FIRST_DUMP_S = 0.5  # after the start: the program's first second is often its busiest
MAX_SECONDS = 3600.0
DEFAULT_RATE = 10.0
LOAD_SLACK_S = 5.0  # locust runs a little past the window: the SIGQUIT dump is under load too
SIGQUIT_WAIT_S = 5.0
POLL_S = 0.1

EPILOG = """\
what it finds (each attributed to the program's own function and file:line, the
main module read from the binary's build info):
  global_deadlock   "fatal error: all goroutines are asleep - deadlock!"
  partial_deadlock  goroutines blocked on a lock, a send, a nil channel, a Cond or a
                    WaitGroup for --blocked seconds or more (same goroutine, same stack)
  goroutine_leak    a group of goroutines (same state and stack) that only grows
  data_race         "WARNING: DATA RACE" (a -race build: --race)
  crash             panics and fatal errors (concurrent map writes, closed channels...)
not findings: idle workers and loops waiting in a receive or select (unless their
number grows), servers in IO wait, sleeps, timers, select {}, short waits.

how: the program runs on the local backend with $PORT set (also substituted for
{port} in its arguments); delve (dlv attach, then detach) dumps its goroutines
every second, pausing it ~0.1-0.3 s each time; its output is scanned for the
runtime's reports; at the end of the window SIGQUIT makes the runtime print its
own dump (the program exits). A crash ends the window early.
--go-package PATH: faultline builds the package (cached) and, with Go >= 1.26,
with GOEXPERIMENT=goroutineleakprofile and a file of its own (go build -overlay)
that writes the runtime's goroutine leak profile every second: it proves
receives and selects blocked for good too, which dumps from outside cannot
(--no-leak-profile: a plain build).

exit codes: 1 a finding, 0 clean, 2 bad input, 130/143 interrupted.

examples:
  faultline observe -- ./myservice --config dev.yaml
  faultline observe --race --for 20 -- ./myservice-race
  faultline observe --go-package ./cmd/myservice --load loadfile.py --rate 50
"""


@dataclass(frozen=True)
class ObserveArgs:
    command: tuple[str, ...]  # the binary first; "{port}" not yet substituted
    info: BuildInfo
    seconds: float
    blocked: float
    race: bool
    load: Path | None
    rate: float
    report_dir: Path
    delve: bool
    leak_profile: bool


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``faultline observe`` to the ``faultline`` command."""
    p = subparsers.add_parser(
        "observe",
        help="run a Go program, find its deadlocks, leaks, races and crashes",
        description=(__doc__ or "").split("\n\n")[0].replace("``", ""),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=(
            "faultline observe [--race] [--for SECONDS] [--load LOCUSTFILE --rate N] "
            "[--go-package PATH [--no-leak-profile]] [--blocked SECONDS] [--report-dir DIR] "
            "[-- COMMAND ARGS...]"
        ),
    )
    p.add_argument(
        "--for",
        dest="seconds",
        default="10",
        metavar="SECONDS",
        help="how long to watch (default 10; a crash ends it early)",
    )
    p.add_argument(
        "--race", action="store_true", help="expect a -race build (with --go-package: build one)"
    )
    p.add_argument(
        "--load",
        metavar="LOCUSTFILE",
        help="locust load against http://127.0.0.1:$PORT during the window",
    )
    p.add_argument("--rate", metavar="N", help=f"requests/s of --load (default {DEFAULT_RATE:g})")
    p.add_argument(
        "--go-package",
        metavar="PATH",
        help="build this Go main package (cached) and observe it; ARGS go to it",
    )
    p.add_argument(
        "--blocked",
        default="3",
        metavar="SECONDS",
        help="blocked this long on a lock, send, Cond or WaitGroup is a deadlock",
    )
    p.add_argument(
        "--no-leak-profile",
        action="store_true",
        help="with --go-package: build without the runtime's goroutine leak profile",
    )
    p.add_argument(
        "--no-delve",
        action="store_true",
        help="no dumps from outside: only the output and the final SIGQUIT dump",
    )
    p.add_argument("--report-dir", default="faultline-reports")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS...")
    p.set_defaults(fn=cmd_observe)


def _seconds(value: str, flag: str, maximum: float = MAX_SECONDS) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (0 < seconds <= maximum):
        raise ConfigError(
            flag, f"{value!r}", expected=f"a number of seconds > 0 and <= {maximum:g}"
        )
    return seconds


def parse_args(ns: argparse.Namespace) -> ObserveArgs:
    """Check every flag before anything is started; ConfigError names the flag."""
    seconds = _seconds(ns.seconds, "--for")
    blocked = _seconds(ns.blocked, "--blocked")
    command = list(ns.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if ns.rate is not None and ns.load is None:
        raise ConfigError(
            "--rate",
            "is the rate of --load, which is not given",
            expected="--load LOCUSTFILE --rate N",
        )
    load = resolve_locustfile(ns.load, field="--load") if ns.load is not None else None
    rate = DEFAULT_RATE
    if ns.rate is not None:
        rate = _seconds(ns.rate, "--rate", MAX_RATE)  # same shape: a number > 0 up to a bound
    if ns.no_leak_profile and ns.go_package is None:
        raise ConfigError(
            "--no-leak-profile",
            "applies to --go-package only: a binary given is observed as it is",
            expected="--go-package PATH --no-leak-profile",
        )
    leak_profile = False
    if ns.go_package is not None:
        extra: dict[str, str] = {}
        leak_profile = not ns.no_leak_profile and leakprofile.available(
            gobuild.go_version(gobuild.find_go())
        )
        if leak_profile:
            extra[leakprofile.FILE_NAME] = leakprofile.SOURCE
        binary = gobuild.build_package(
            Path(ns.go_package),
            race=ns.race,
            field="--go-package",
            extra_files=extra,
            goexperiment=leakprofile.EXPERIMENT if leak_profile else "",
        )
        command = [str(binary), *command]
    elif not command:
        raise ConfigError("COMMAND", "no program given", expected="faultline observe -- ./prog")
    else:
        found = shutil.which(command[0])
        if found is None:
            raise ConfigError("COMMAND", f"{command[0]!r} not found or not executable")
        command[0] = found
    info = read_buildinfo(Path(command[0]))
    if info is None:
        raise ConfigError(
            "COMMAND",
            f"{command[0]} is not a Go binary (no Go build info)",
            expected="a program built by Go >= 1.18",
        )
    if ns.race and not info.race:
        raise ConfigError(
            "--race",
            f"{command[0]} is not a -race build",
            expected="a binary from go build -race, or --go-package PATH",
        )
    return ObserveArgs(
        command=tuple(command),
        info=info,
        seconds=seconds,
        blocked=blocked,
        race=ns.race or info.race,
        load=load,
        rate=rate,
        report_dir=Path(ns.report_dir).resolve(),
        delve=not ns.no_delve,
        leak_profile=leak_profile,
    )


@contextlib.contextmanager
def _interrupts() -> Iterator[list[int]]:
    """SIGINT/SIGTERM raise KeyboardInterrupt; the list gets the signal's number."""
    got: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        got.append(signum)
        raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cmd_observe(ns: argparse.Namespace) -> int:
    args = parse_args(ns)
    with _interrupts() as got:
        try:
            return _observe(args)
        except KeyboardInterrupt:
            print("faultline observe: interrupted; the program was stopped", flush=True)
            return 143 if got and got[0] == signal.SIGTERM else 130


@dataclass
class _Window:
    ended_by: str = "the window's end"
    exit_code: int | None = None
    dumps: int = 0
    attach_s: tuple[float, ...] = ()
    delve_error: str | None = None
    sigquit_dump: bool = False
    load: str | None = None  # what the load did, with --load


def _observe(args: ObserveArgs) -> int:
    print(_header(args), flush=True)
    with Run.open() as run:
        tl = run.timeline
        backend = LocalBackend(run)
        try:
            watch, window = _watch(args, run, backend)
        finally:
            backend.close()
        findings = watch.findings
        for f in findings:
            tl.event("detector.hit", f.kind, at=f.at, **f.to_detail())
        checks = [CheckResult(f"observe:{f.kind}", Status.FAILED, str(f)) for f in findings]
        if not findings:
            checks = [CheckResult("observe:no_findings", Status.PASSED, _clean_message(window))]
        name = Path(args.command[0]).name
        report = build_report(tl, scenario=f"observe-{name}", checks=checks, run_id=run.run_id)
        report["title"] = " ".join(args.command)
        report["key_series"] = [
            k
            for k in (
                "observe.goroutines",
                "observe.own_goroutines",
                "load.rps",
                "observe.delve_attach_s",
            )
            if k in report["series"]
        ]
        report["seed"] = f"{args.info.go_version}, main module {args.info.main_module or '-'}"
        report["notes"] = _notes(args, window)
        json_path, html_path = write_reports(
            args.report_dir / f"observe-{name}" / run.run_id, report
        )
    _print(findings, window)
    print(f"report: {html_path} ({json_path.name} beside it)")
    verdict = f"{len(findings)} finding(s)" if findings else "clean"
    print(f"faultline observe: {verdict} (exit {1 if findings else 0})")
    return 1 if findings else 0


def _header(args: ObserveArgs) -> str:
    info = args.info
    module = info.main_module or "(no module: main.* only)"
    race = ", -race build" if info.race else ""
    load = f", load {args.load.name} at {args.rate:g}/s" if args.load else ""
    return (
        f"faultline observe: {' '.join(args.command)}\n"
        f"  {info.go_version}, main module {module}{race}; window {args.seconds:g}s{load}"
    )


def _watch(args: ObserveArgs, run: Run, backend: LocalBackend) -> tuple[ProgramWatch, _Window]:
    tl = run.timeline
    dumper = DelveDumper(run) if args.delve else None  # built (once) before the program starts
    profile_dir = run.subdir("leakprofile") if args.leak_profile else None
    leak_env = {leakprofile.ENV: str(profile_dir)} if profile_dir is not None else {}
    placement = backend.plan(NAME, ["http"])
    port = placement.port("http")
    command = tuple(a.replace("{port}", str(port)) for a in args.command)
    spec = WorkloadSpec(
        name=NAME, command=command, placement=placement, env={"PORT": str(port), **leak_env}
    )
    project = ProjectCode.of(args.info)
    log_path = run.dir / "logs" / f"{NAME}.log"
    detector = LogDetector(Timeline(), {NAME: log_path}, project=project)
    load: LoadGenerator | None = None
    if args.load is not None:
        load = LoadGenerator(
            run,
            locustfile=args.load,
            host=f"http://127.0.0.1:{port}",
            rate=args.rate,
            duration=args.seconds + LOAD_SLACK_S,
        )
    try:
        if load is not None:
            # Up before the program starts (locust takes seconds to): the program is
            # under load from its first second, and the TTD is the program's own.
            load.start()
        started = tl.now()
        watch = ProgramWatch(started, project, min_blocked=args.blocked)
        tl.event("fault.injected", f"observe:{Path(command[0]).name}", command=" ".join(command))
        backend.start(spec)
        window = _loop(
            args, backend, detector, watch, dumper, started + args.seconds, tl, profile_dir
        )
    finally:
        if load is not None:
            load.stop()
        with contextlib.suppress(HarnessError):
            backend.stop(NAME, timeout=5.0)
        tl.event("fault.reverted", f"observe:{Path(command[0]).name}")
    _take_hits(detector, watch, tl, final=True)
    if load is not None:
        total = load.summary()["total"]
        window.load = f"load: {total['requests']} requests, {total['failures']} failed"
    return watch, window


def _requests(tl: Timeline) -> float | None:
    samples = tl.series("load.rps")
    return sum(s.value for s in samples) if samples else None


def _take_hits(detector: LogDetector, watch: ProgramWatch, tl: Timeline, *, final: bool) -> None:
    seen = len(detector.hits)
    detector.poll(final=final)
    for _, hit in detector.hits[seen:]:
        found = watch.add_hit(hit, at=tl.now())
        if found is not None:
            print(f"  FOUND at {found.ttd:.1f}s: {found}", flush=True)


def _loop(
    args: ObserveArgs,
    backend: LocalBackend,
    detector: LogDetector,
    watch: ProgramWatch,
    dumper: DelveDumper | None,
    end: float,
    tl: Timeline,
    profile_dir: Path | None,
) -> _Window:
    window = _Window()
    attach: list[float] = []
    next_dump = watch.started_at + FIRST_DUMP_S
    profiles = 0.0  # mtime of the last leak profile read
    while True:
        _take_hits(detector, watch, tl, final=False)
        if profile_dir is not None:
            profiles = _take_leak_profile(profile_dir, profiles, watch, tl)
        status = backend.status(NAME)
        if not status.running:
            window.ended_by = "the program's exit"
            break
        if tl.now() >= end:
            break
        pid = backend.pid(NAME)
        if dumper is not None and pid is not None and tl.now() >= next_dump:
            at = tl.now()
            got = dumper.dump(pid, taken_at=at)
            next_dump = max(next_dump + DUMP_EVERY_S, tl.now() + POLL_S)
            if got is None:
                window.delve_error = dumper.error
            else:
                dump = got.dump
                if (served := _requests(tl)) is not None:
                    dump = Dump(dump.goroutines, dump.taken_at, served)
                attach.append(got.seconds)
                _found(watch.add_dump(dump, source="delve"))
                _sample(watch, tl, at, got.seconds)
            continue
        time.sleep(POLL_S)
    window.attach_s = tuple(attach)
    if window.ended_by == "the window's end":
        window.sigquit_dump = _sigquit(backend, detector, watch, tl)
        if not window.sigquit_dump:
            window.ended_by += " (no SIGQUIT dump: the program handles SIGQUIT, or had exited)"
    else:  # the supervisor records the exit code a moment after the exit
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: backend.status(NAME).exit_code is not None, timeout=2.0)
        window.exit_code = backend.status(NAME).exit_code
    window.dumps = len(watch.dumps)
    return window


def _take_leak_profile(directory: Path, seen: float, watch: ProgramWatch, tl: Timeline) -> float:
    """Read the leak profile when the program wrote a new one; its mtime."""
    try:
        mtime = (directory / leakprofile.PROFILE).stat().st_mtime
    except FileNotFoundError:
        return seen
    if mtime == seen:
        return seen
    dump = leakprofile.read_profile(directory, taken_at=tl.now())
    if dump is not None:
        _found(watch.add_leak_profile(dump))
    return mtime


def _sample(watch: ProgramWatch, tl: Timeline, at: float, attach_s: float) -> None:
    counts = watch.goroutine_counts()
    if counts is not None:
        tl.sample("observe.goroutines", float(counts[0]), at=at)
        tl.sample("observe.own_goroutines", float(counts[1]), at=at)
    tl.sample("observe.delve_attach_s", attach_s, at=at)


def _found(findings: list[ProgramFinding]) -> None:
    for f in findings:
        print(f"  FOUND at {f.ttd:.1f}s: {f}", flush=True)


def _sigquit(
    backend: LocalBackend, detector: LogDetector, watch: ProgramWatch, tl: Timeline
) -> bool:
    """SIGQUIT: the runtime prints every goroutine and exits; that dump is the last one."""
    path = backend.log_path(NAME)
    before = path.stat().st_size if path.exists() else 0
    at = tl.now()
    try:
        backend.kill(NAME, signal.SIGQUIT)
    except ProcessLookupError:  # it exited just now: its output is read all the same
        return False
    deadline = time.monotonic() + SIGQUIT_WAIT_S
    while backend.status(NAME).running and time.monotonic() < deadline:
        time.sleep(POLL_S)
    _take_hits(detector, watch, tl, final=False)
    with path.open("rb") as fh:
        fh.seek(before)
        text = fh.read().decode(errors="replace")
    marker = text.find("SIGQUIT: quit")
    if marker < 0:
        return False
    dump = parse_dump(text[marker:], taken_at=at, requests=_requests(tl))
    if not dump.goroutines:
        return False
    _found(watch.add_dump(dump, source="SIGQUIT dump"))
    return True


def _clean_message(window: _Window) -> str:
    return f"no finding in {window.dumps} dumps and the program's output"


def _notes(args: ObserveArgs, window: _Window) -> list[str]:
    notes = [f"window ended by {window.ended_by}"]
    if window.exit_code is not None:
        notes.append(f"the program exited with {window.exit_code}")
    if window.attach_s:
        a = window.attach_s
        notes.append(
            f"{len(a)} delve dumps; the program was paused {min(a):.2f}-{max(a):.2f}s per dump "
            f"({sum(a) / len(a):.2f}s mean)"
        )
    elif not args.delve:
        notes.append("delve off (--no-delve): only the output and the final SIGQUIT dump")
    if args.leak_profile:
        notes.append(
            "built with GOEXPERIMENT=goroutineleakprofile: the runtime's leak profile read"
        )
    else:
        notes.append(
            "no goroutine leak profile: it needs a build by faultline (--go-package), Go >= 1.26"
        )
    if window.delve_error:
        notes.append(f"delve: {window.delve_error}")
    if window.sigquit_dump:
        notes.append("the runtime's SIGQUIT dump was the last one (it ends the program)")
    if window.load:
        notes.append(window.load)
    return notes


def _print(findings: list[ProgramFinding], window: _Window) -> None:
    if not findings:
        print(f"no findings: {_clean_message(window)}")
    else:
        print(f"{len(findings)} finding(s):")
        for f in findings:
            print(f"  {f.label}: {f.frame.function if f.frame else '(no own frame)'}")
            if f.frame is not None:
                print(f"      at {f.frame.file}:{f.frame.line}")
            count = f", {f.count} goroutine(s)" if f.count else ""
            print(f"      [{f.state}]{count}; {f.detail}; TTD {f.ttd:.1f}s ({f.source})")
    for note in _notes_short(window):
        print(f"  ({note})")


def _notes_short(window: _Window) -> list[str]:
    code = "" if window.exit_code is None else f" (exit {window.exit_code})"
    out = [f"window ended by {window.ended_by}{code}"]
    if window.attach_s:
        a = window.attach_s
        out.append(f"{len(a)} delve dumps, paused {sum(a) / len(a):.2f}s each on average")
    if window.delve_error:
        out.append(f"delve: {window.delve_error}")
    if window.load:
        out.append(window.load)
    return out
