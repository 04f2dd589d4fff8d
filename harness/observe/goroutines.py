"""Goroutine dumps (``/debug/pprof/goroutine?debug=2``): parse, group, classify.

A dump lists every goroutine with its state (``running``, ``chan receive``,
``sync.Mutex.Lock``...), how long it has been blocked (``N minutes``, printed
only once a GC has stamped the wait, so often absent) and its stack. Goroutines
with the same state and stack form a :class:`Group`.

Two findings, from successive dumps of one process:

* leak: a group whose count grows from dump to dump (and with the request
  count, when known) and whose goroutines stay (the same ids dump after dump):
  something starts goroutines that never finish.
* deadlock: goroutines blocked on a channel, ``select`` or a lock for longer than
  a threshold, seen either as the same goroutine id in the same blocked stack in
  dumps that far apart, or through the ``N minutes`` the runtime printed. Groups
  that grow are leaks, not deadlocks.

Each finding names its top frame in the project's code (function + file:line):
``project`` is a :class:`~harness.observe.buildinfo.ProjectCode` made from the
binary's build info (its main module); the default counts ``main.*`` only.
Dumps come from ``debug=2`` (:func:`parse_dump`, also a crash's or SIGQUIT's
stacks) or from delve attached from outside (:func:`parse_delve`).

>>> dumps = [parse_dump(text, taken_at=t, requests=n) for text, t, n in captured]  # doctest: +SKIP
>>> for f in find_leaks(dumps) + find_deadlocks(dumps, min_blocked=10): print(f)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from harness.observe.buildinfo import MAIN_ONLY

__all__ = [
    "BLOCKING_STATES",
    "DEADLOCK_STATES",
    "RUNS_MARKER",
    "Dump",
    "Finding",
    "Frame",
    "Goroutine",
    "Group",
    "find_deadlocks",
    "find_leaks",
    "group",
    "parse_delve",
    "parse_dump",
]

log = logging.getLogger(__name__)

# Wait reasons of a goroutine that waits on another goroutine (not on I/O, timers or GC).
BLOCKING_STATES = frozenset(
    {
        "chan send",
        "chan receive",
        "chan send (nil chan)",
        "chan receive (nil chan)",
        "select",
        "select (no cases)",
        "semacquire",
        "sync.Mutex.Lock",
        "sync.RWMutex.Lock",
        "sync.RWMutex.RLock",
        "sync.Cond.Wait",
        "sync.WaitGroup.Wait",
    }
)
# The blocking waits that are a deadlock once they last: a lock not released, a
# send nobody takes, a nil channel, a Cond or WaitGroup not woken. Not in it, as
# legitimate parking: ``chan receive`` and ``select`` (idle workers, loops on a
# ticker, a main waiting for its shutdown signal: from outside, their wake-ups
# cannot be told from never) and ``select (no cases)`` (``select {}`` keeps a
# daemon's main alive). Those still count as leaks when their group grows.
DEADLOCK_STATES = BLOCKING_STATES - {"chan receive", "select", "select (no cases)"}

_HEADER = re.compile(r"^goroutine (\d+)(?: [^\[]*)? ?\[([^\]]*)\]:$")
_LOCATION = re.compile(r"^\t(.+?):(\d+)(?: \+0x[0-9a-f]+)?(?: fp=\S+ sp=\S+ pc=\S+)?$")
_CREATED = re.compile(r"^created by (\S+?)(?: in goroutine \d+)?$")
_MINUTES = re.compile(r"^(\d+) minutes$")
# delve's `goroutines -g -t`: "  Goroutine 6 - Go: /src/main.go:17 main.main (0x49e54c)
# [sync.Mutex.Lock]" on one line (running ones end with "(thread N)" and have no
# wait reason); then per frame
# "\t0  0x000000000047974e in runtime.gopark" and "\t    at /src/runtime/proc.go:463".
_DLV_HEADER = re.compile(r"^\s*\*?\s*Goroutine (\d+) - .*?(?:\[([^\]]*)\])?$")
_DLV_FRAME = re.compile(r"^\s*\d+\s+0x[0-9a-f]+ in (\S+)$")
_DLV_AT = re.compile(r"^\s*at (.+):(\d+)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: printed between delve's stacks and its per-goroutine trackingSeq values
RUNS_MARKER = "faultline: trackingSeq"


@dataclass(frozen=True)
class Frame:
    function: str  # without arguments: "main.waitForReply", "sync.(*Mutex).Lock"
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.function} ({self.file}:{self.line})"


@dataclass(frozen=True)
class Goroutine:
    id: int
    state: str  # the wait reason: "chan receive", "sync.Mutex.Lock", "running", ...
    minutes: int  # minutes blocked as printed by the runtime (0 when not printed)
    frames: tuple[Frame, ...]
    created_by: Frame | None
    # The runtime's g.trackingSeq (delve dumps only): it changes whenever the
    # goroutine stops running, so an equal value in two dumps means it did not run.
    runs: int | None = None

    @property
    def signature(self) -> tuple[str, ...]:
        """State and stack: goroutines with equal signatures are copies of one another."""
        created = () if self.created_by is None else (f"created by {self.created_by.function}",)
        return (self.state, *(f.function for f in self.frames), *created)

    def top_frame(self, project: Callable[[str], bool] = MAIN_ONLY) -> Frame | None:
        """The innermost frame in the project's code (falls back to the creator)."""
        for f in self.frames:
            if project(f.function):
                return f
        if self.created_by is not None and project(self.created_by.function):
            return self.created_by
        return None


@dataclass(frozen=True)
class Dump:
    goroutines: tuple[Goroutine, ...]
    taken_at: float | None = None  # timeline seconds
    requests: float | None = None  # requests served when the dump was taken


def _strip_args(call: str) -> str:
    # "main.transfer(0x0?, 0xa4a930)" -> "main.transfer"; "sync.(*Mutex).Lock(...)" keeps
    # the receiver's parentheses, so cut at the last "(" only when the line ends with ")".
    if call.endswith(")"):
        return call[: call.rfind("(")]
    return call


def parse_dump(text: str, *, taken_at: float | None = None, requests: float | None = None) -> Dump:
    """Parse a ``debug=2`` goroutine dump (also the stacks of a Go crash)."""
    goroutines: list[Goroutine] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        if not lines:
            continue
        m = _HEADER.match(lines[0].strip())
        if not m:
            continue
        parts = [p.strip() for p in m.group(2).split(",")]
        minutes = next((int(mm.group(1)) for p in parts if (mm := _MINUTES.match(p))), 0)
        frames: list[Frame] = []
        created_by: Frame | None = None
        i = 1
        while i < len(lines):
            call = lines[i]
            loc = _LOCATION.match(lines[i + 1]) if i + 1 < len(lines) else None
            file, line = (loc.group(1), int(loc.group(2))) if loc else ("?", 0)
            cm = _CREATED.match(call)
            if cm:
                created_by = Frame(cm.group(1), file, line)
            elif not call.startswith(("...", "\t")):
                frames.append(Frame(_strip_args(call), file, line))
            i += 2 if loc else 1
        goroutines.append(Goroutine(int(m.group(1)), parts[0], minutes, tuple(frames), created_by))
    return Dump(tuple(goroutines), taken_at, requests)


_DLV_GO = re.compile(r" - Go: (.+):(\d+) (\S+) \(0x[0-9a-f]+\)")


def parse_delve(text: str, *, taken_at: float | None = None, requests: float | None = None) -> Dump:
    """Parse delve's ``goroutines -g -t DEPTH`` output (colour codes are stripped).

    Frames include the runtime's (``runtime.gopark``...), which a ``debug=2`` dump
    hides; the ``Go:`` location (``-g``) is where the goroutine was started. After
    a line ``"<RUNS_MARKER>"``, the output of ``goroutines -exec print
    runtime.curg.trackingSeq`` fills :attr:`Goroutine.runs`.
    """
    text = _ANSI.sub("", text)
    stacks, _, seqs = text.partition(f'"{RUNS_MARKER}"')
    runs: dict[int, int] = {}
    goid: int | None = None
    for line in seqs.splitlines():
        if m := _DLV_HEADER.match(line.replace("(dlv) ", "")):
            goid = int(m.group(1))
        elif goid is not None and line.strip().isdigit():
            runs[goid], goid = int(line.strip()), None
    goroutines: list[Goroutine] = []
    current: tuple[int, str, Frame | None] | None = None
    frames: list[Frame] = []
    pending: str | None = None

    def close() -> None:
        if current is not None:
            goid, state, created = current
            goroutines.append(Goroutine(goid, state, 0, tuple(frames), created, runs.get(goid)))

    for raw in stacks.splitlines():
        line = raw.replace("(dlv) ", "")
        if m := _DLV_HEADER.match(line):
            close()
            go = _DLV_GO.search(line)
            created = Frame(go.group(3), go.group(1), int(go.group(2))) if go else None
            current, frames, pending = (int(m.group(1)), m.group(2) or "running", created), [], None
        elif current is not None and (m := _DLV_FRAME.match(line)):
            pending = m.group(1)
        elif current is not None and pending is not None and (m := _DLV_AT.match(line)):
            frames.append(Frame(pending, m.group(1), int(m.group(2))))
            pending = None
    close()
    return Dump(tuple(goroutines), taken_at, requests)


@dataclass(frozen=True)
class Group:
    signature: tuple[str, ...]
    state: str
    goroutines: tuple[Goroutine, ...]

    @property
    def count(self) -> int:
        return len(self.goroutines)


def group(dump: Dump) -> dict[tuple[str, ...], Group]:
    """Goroutines of a dump grouped by signature (state + stack)."""
    by_sig: dict[tuple[str, ...], list[Goroutine]] = {}
    for g in dump.goroutines:
        by_sig.setdefault(g.signature, []).append(g)
    return {sig: Group(sig, gs[0].state, tuple(gs)) for sig, gs in by_sig.items()}


@dataclass(frozen=True)
class Finding:
    kind: str  # "leak" | "deadlock"
    state: str
    count: int  # goroutines in the group in the last dump
    top_frame: Frame | None
    detail: str
    signature: tuple[str, ...]

    def __str__(self) -> str:
        where = self.top_frame or "(no project frame)"
        return f"{self.kind}: {self.count} goroutines [{self.state}] at {where}: {self.detail}"


def find_leaks(
    dumps: Sequence[Dump],
    *,
    min_growth: int = 5,
    project: Callable[[str], bool] = MAIN_ONLY,
) -> list[Finding]:
    """Groups whose count never falls across ``dumps``, rises by >= ``min_growth``,
    still rose in the second half of them (a pool that filled up is no leak) and
    whose goroutines outlive the dumps (most of those in the earliest dump that has
    the group are still there, by id, in the last).

    When the dumps carry request counts, a group must also grow between dumps
    where requests were served and the finding reports goroutines per request.
    """
    if len(dumps) < 2:
        return []
    groups = [group(d) for d in dumps]
    findings = []
    for sig, last in groups[-1].items():
        counts = [gs[sig].count if sig in gs else 0 for gs in groups]
        rising = all(b >= a for a, b in itertools.pairwise(counts))
        if not rising or counts[-1] - counts[0] < min_growth:
            continue
        if len(counts) >= 3 and counts[-1] == counts[len(counts) // 2]:
            continue  # grew, then stopped: a pool that filled up, not a leak
        if not _outlived(sig, groups):
            continue  # the count grew, but its goroutines come and go: a busy spell, not a leak
        detail = f"count {' -> '.join(map(str, counts))} over {len(dumps)} dumps"
        first_req, last_req = dumps[0].requests, dumps[-1].requests
        if first_req is not None and last_req is not None:
            served = last_req - first_req
            if served <= 0:
                continue  # growth without requests: not the request-driven leak we look for
            detail += f", {(counts[-1] - counts[0]) / served:.2f} per request"
        top = last.goroutines[0].top_frame(project)
        findings.append(Finding("leak", last.state, last.count, top, detail, sig))
    findings.sort(key=lambda f: -f.count)
    return findings


def _outlived(sig: tuple[str, ...], groups: Sequence[dict[tuple[str, ...], Group]]) -> bool:
    """Whether most goroutines of group ``sig`` in the earliest dump that has it
    are still there (same id) in the last dump: leaked goroutines never end, while
    short-lived ones (a watcher on a 200 ms timeout) pile up in a slow spell and
    are gone a dump later. A group seen only in the last dump has not shown it yet.
    """
    present = [gs[sig] for gs in groups if sig in gs]
    if len(present) < 2:
        return False
    earliest = {g.id for g in present[0].goroutines}
    alive = earliest & {g.id for g in present[-1].goroutines}
    return 2 * len(alive) >= len(earliest)


def find_deadlocks(
    dumps: Sequence[Dump],
    *,
    min_blocked: float = 60.0,
    project: Callable[[str], bool] = MAIN_ONLY,
    states: Collection[str] = DEADLOCK_STATES,
) -> list[Finding]:
    """Groups blocked in one of ``states`` (default :data:`DEADLOCK_STATES`: locks,
    sends, nil channels, Cond and WaitGroup waits) for at least ``min_blocked`` seconds.

    Blocked time is the larger of what the runtime printed (``N minutes``) and
    how long the same goroutine id sat in the same blocked stack across dumps
    (which needs ``taken_at`` on the dumps) without running in between, when the
    dumps know (:attr:`Goroutine.runs`, from delve): a loop that waits at the
    same place again and again is not blocked throughout. Groups still growing
    between the last two dumps are left to :func:`find_leaks` (a deadlocked pool
    fills up, then plateaus: that plateau is reported here); goroutines without
    a project frame (idle runtime and library workers) are ignored.

    A loop that sleeps on a ticker or an idle worker waiting on its job channel
    sits in ``chan receive`` / ``select`` in every dump, between wake-ups we
    cannot see: those states are left out by default (pass
    :data:`BLOCKING_STATES` to include them). Known false positive: a Cond or
    WaitGroup wait that lasts longer than ``min_blocked`` by design. The
    runtime's ``N minutes`` is printed only after a GC, in whole minutes.
    """
    if not dumps:
        return []
    leaking = {f.signature for f in find_leaks(dumps[-2:], project=project)}
    last = dumps[-1]
    first_seen: dict[tuple[int, tuple[str, ...], int | None], float] = {}
    for d in dumps:
        if d.taken_at is None:
            continue
        for g in d.goroutines:
            first_seen.setdefault((g.id, g.signature, g.runs), d.taken_at)
    findings = []
    for sig, grp in group(last).items():
        if grp.state not in states or sig in leaking:
            continue
        top = grp.goroutines[0].top_frame(project)
        if top is None:
            continue
        blocked = []
        for g in grp.goroutines:
            seen = first_seen.get((g.id, sig, g.runs))
            across = (last.taken_at - seen) if seen is not None and last.taken_at else 0.0
            blocked.append(max(60.0 * g.minutes, across))
        longest = max(blocked)
        if longest < min_blocked:
            continue
        detail = f"blocked >= {longest:.0f}s ({len(blocked)} goroutines)"
        findings.append(Finding("deadlock", grp.state, grp.count, top, detail, sig))
    findings.sort(key=lambda f: -f.count)
    return findings
