"""Go-runtime findings on a program faultline did not write: dumps and output in, findings out.

:class:`ProgramWatch` is the pure part of ``faultline observe``: it is fed
goroutine dumps (taken from outside by delve, :mod:`harness.observe.delve`,
and the runtime's own SIGQUIT dump at the end) and the crash / race reports of
the program's output (:class:`~harness.observe.logs.LogScanner` hits), and
keeps one :class:`ProgramFinding` per bug, classified:

==================  ======================================================
class               evidence
==================  ======================================================
``global_deadlock`` ``fatal error: all goroutines are asleep - deadlock!``
``partial_deadlock`` goroutines of the program's code blocked on a lock, a
                    send, a nil channel, a Cond or a WaitGroup for
                    ``min_blocked`` seconds (same goroutine id, same
                    stack, and it did not run in between)
``goroutine_leak``  a group (state + stack) whose count only rises, by
                    ``min_growth`` or more over ``min_leak_dumps`` dumps
                    or more, and still rose in the second half
``data_race``       ``WARNING: DATA RACE`` (a ``-race`` build)
``crash``           ``panic:``, ``fatal error:`` (concurrent map writes...)
==================  ======================================================

For a program faultline builds with Go >= 1.26, the runtime's goroutine leak
profile (:meth:`ProgramWatch.add_leak_profile`) adds what dumps from outside
cannot prove: receives and selects that will never return.

Goroutines parked legitimately are no finding: idle workers and loops in
``chan receive`` / ``select`` (unless their number grows), servers in ``IO
wait``, sleeps, timers, ``select {}``, and waits shorter than ``min_blocked``.

Attribution: every finding names the innermost frame of the program's own
code (``project``, from the binary's main module), with file:line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from harness.observe.buildinfo import MAIN_ONLY
from harness.observe.goroutines import (
    Dump,
    Finding,
    Frame,
    Goroutine,
    find_deadlocks,
    find_leaks,
    group,
)
from harness.observe.logs import Hit

__all__ = ["CLASSES", "ProgramFinding", "ProgramWatch", "own_frames"]

LEAKED = " (leaked)"  # after the wait reason, in the leak profile
# Blocked for good on purpose: ``select {}`` keeps a daemon's main (or a goroutine) alive.
PARKED_FOR_GOOD = frozenset({"select (no cases)"})
CLASSES = ("global_deadlock", "partial_deadlock", "goroutine_leak", "data_race", "crash")
# A report pattern of harness.observe.logs -> its class.
_HIT_CLASS = {"all_goroutines_asleep": "global_deadlock", "data_race": "data_race"}
# What a crash was, for the wait-reason column.
_HIT_STATE = {
    "concurrent_map_writes": "concurrent map writes",
    "concurrent_map_iteration": "concurrent map iteration and map write",
    "concurrent_map_read": "concurrent map read and map write",
}


@dataclass(frozen=True)
class ProgramFinding:
    kind: str  # one of CLASSES
    at: float  # timeline seconds when it was found
    ttd: float  # seconds from the program's start
    frame: Frame | None  # the program's own frame it is attributed to
    state: str  # wait reason ("sync.Mutex.Lock") or what crashed ("panic: ...")
    count: int  # goroutines involved (0 for output reports)
    detail: str  # "blocked >= 4s", "count 3 -> 40 over 8 dumps", the report's first line
    source: str  # "delve", "SIGQUIT dump", "output"
    stack: str = ""  # the report (output findings)

    @property
    def label(self) -> str:
        return self.kind.replace("_", " ")

    def __str__(self) -> str:
        where = self.frame or "(no frame in the program's code)"
        goroutines = (
            f"{self.count} goroutine{'s' if self.count != 1 else ''} " if self.count else ""
        )
        return f"{self.label}: {goroutines}[{self.state}] at {where}; {self.detail}"

    def to_detail(self) -> dict[str, object]:
        """The timeline event's detail (report.json ``detections[].detail``)."""
        f = self.frame
        return {
            "class": self.kind,
            "top_frame": None if f is None else str(f),
            "function": None if f is None else f.function,
            "file": None if f is None else f.file,
            "line": None if f is None else f.line,
            "state": self.state,
            "goroutines": self.count,
            "detail": self.detail,
            "ttd_s": round(self.ttd, 3),
            "source": self.source,
            "stack": self.stack,
        }


def own_frames(dump: Dump, project: Callable[[str], bool]) -> Dump:
    """``dump`` with only the program's own frames in each stack.

    delve shows the runtime's frames, a ``debug=2`` dump hides them and a SIGQUIT
    dump shows them differently: with only the program's frames, the same
    goroutine has the same signature in all three.
    """
    gs = tuple(
        replace(g, frames=tuple(f for f in g.frames if project(f.function)))
        for g in dump.goroutines
    )
    return Dump(gs, dump.taken_at, dump.requests)


@dataclass
class ProgramWatch:
    """Findings of one observed program; feed it with :meth:`add_dump` and :meth:`add_hit`."""

    started_at: float  # timeline seconds at the program's start
    project: Callable[[str], bool] = MAIN_ONLY
    min_blocked: float = 3.0
    min_growth: int = 5
    min_leak_dumps: int = 4  # growth over three intervals, not one burst
    dumps: list[Dump] = field(default_factory=list)
    findings: list[ProgramFinding] = field(default_factory=list)
    _seen: set[tuple[str, ...]] = field(default_factory=set)

    def add_dump(self, dump: Dump, *, source: str) -> list[ProgramFinding]:
        """Add a dump (``taken_at`` set); return the findings it brought."""
        self.dumps.append(own_frames(dump, self.project))
        at = dump.taken_at if dump.taken_at is not None else self.started_at
        new: list[ProgramFinding] = []
        leaks: list[Finding] = []
        if len(self.dumps) >= self.min_leak_dumps:
            leaks = find_leaks(self.dumps, min_growth=self.min_growth, project=self.project)
        stuck = find_deadlocks(self.dumps, min_blocked=self.min_blocked, project=self.project)
        for kind, found in (("goroutine_leak", leaks), ("partial_deadlock", stuck)):
            for f in found:
                if f.top_frame is None:
                    continue  # a library's or the runtime's own goroutines
                key = ("dump", *f.signature)
                if key not in self._seen:
                    self._seen.add(key)
                    new.append(self._from_dumps(kind, f, at, source))
        self.findings += new
        return new

    def _from_dumps(self, kind: str, f: Finding, at: float, source: str) -> ProgramFinding:
        stack = "\n".join(f.signature)  # the wait reason, then the program's own frames
        return ProgramFinding(
            kind, at, at - self.started_at, f.top_frame, f.state, f.count, f.detail, source, stack
        )

    def add_leak_profile(self, dump: Dump) -> list[ProgramFinding]:
        """Add the runtime's goroutine leak profile (:mod:`harness.observe.leakprofile`):
        each group of goroutines it proves blocked for good is a partial deadlock, or
        a leak when there are ``min_growth`` or more of them (``select {}`` is parked on
        purpose, not a finding); return the new findings."""
        at = dump.taken_at if dump.taken_at is not None else self.started_at
        leaked = [
            replace(g, state=g.state.removesuffix(LEAKED))
            for g in own_frames(dump, self.project).goroutines
            if g.state.endswith(LEAKED) and g.state.removesuffix(LEAKED) not in PARKED_FOR_GOOD
        ]
        new: list[ProgramFinding] = []
        for sig, grp in group(Dump(tuple(leaked), dump.taken_at)).items():
            top = grp.goroutines[0].top_frame(self.project)
            key = ("dump", *sig)
            if top is None or key in self._seen:
                continue  # seen in the dumps already, or not the program's code
            self._seen.add(key)
            kind = "goroutine_leak" if grp.count >= self.min_growth else "partial_deadlock"
            detail = f"the runtime's leak profile: {grp.count} goroutine(s) blocked for good"
            new.append(
                ProgramFinding(
                    kind, at, at - self.started_at, top, grp.state, grp.count, detail,
                    "leak profile",
                )
            )  # fmt: skip
        self.findings += new
        return new

    def add_hit(self, hit: Hit, *, at: float) -> ProgramFinding | None:
        """Add a report from the program's output; the finding, unless already known."""
        kind = _HIT_CLASS.get(hit.pattern, "crash")
        frame = hit.top_frame(self.project)
        key = ("output", kind, str(frame), hit.first_line if frame is None else "")
        if key in self._seen:
            return None  # the same race reported again
        self._seen.add(key)
        state = _HIT_STATE.get(hit.pattern, hit.first_line.removeprefix("fatal error: "))
        if kind == "data_race":
            state = "data race"
        first = hit.first_line.strip()
        finding = ProgramFinding(
            kind, at, at - self.started_at, frame, state, 0, first, "output", hit.stack
        )
        self.findings.append(finding)
        return finding

    def goroutine_counts(self) -> tuple[int, int] | None:
        """(all, own) goroutines in the last dump: own ones have a frame of the program's."""
        if not self.dumps:
            return None
        last = self.dumps[-1].goroutines
        return len(last), sum(1 for g in last if _own(g))


def _own(g: Goroutine) -> bool:
    return bool(g.frames)
