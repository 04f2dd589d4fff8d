"""Log detectors: tail workload logs for the Go runtime's own crash and race reports.

:class:`LogScanner` is the pure part (lines in, :class:`Hit`\\ s out);
:class:`LogDetector` tails files in a thread and writes a ``detector.hit`` event
per hit onto the timeline, with the captured report in ``detail["stack"]``.

What is captured:

* ``WARNING: DATA RACE``: both stacks, up to the closing ``==================``.
* ``fatal error: concurrent map writes``, ``concurrent map iteration and map
  write``, ``concurrent map read and map write``, ``fatal error: all goroutines
  are asleep``, ``panic:``, any other ``fatal error:``: the message and the
  first goroutine's stack (the one that failed), up to the blank line after it.

A hit is timed when its first line is read, so it lags the write by at most one
poll interval (0.2 s by default).
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.observe.buildinfo import MAIN_ONLY
from harness.observe.goroutines import Frame, parse_dump
from harness.observe.poller import Poller
from harness.timeline import Timeline

__all__ = ["PATTERNS", "Hit", "LogDetector", "LogScanner"]

log = logging.getLogger(__name__)

# name -> pattern of the report's first line
PATTERNS: dict[str, re.Pattern[str]] = {
    "data_race": re.compile(r"^WARNING: DATA RACE"),
    "concurrent_map_writes": re.compile(r"^fatal error: concurrent map writes"),
    "concurrent_map_iteration": re.compile(r"^fatal error: concurrent map iteration and map write"),
    "concurrent_map_read": re.compile(r"^fatal error: concurrent map read and map write"),
    "all_goroutines_asleep": re.compile(r"^fatal error: all goroutines are asleep"),
    "panic": re.compile(r"^panic: "),
    # Any other runtime throw ("fatal error: sync: unlock of unlocked mutex"...): after
    # the specific ones, since the first pattern that matches names the report.
    "fatal_error": re.compile(r"^fatal error: "),
}
_RACE_END = "=================="
_MAX_LINES = 200  # a report longer than this is cut: the top frames are what matter


@dataclass
class Hit:
    pattern: str
    lines: list[str] = field(default_factory=list)
    complete: bool = False

    @property
    def first_line(self) -> str:
        return self.lines[0] if self.lines else ""

    @property
    def stack(self) -> str:
        return "\n".join(self.lines)

    def top_frame(self, project: Callable[[str], bool] = MAIN_ONLY) -> Frame | None:
        """The first frame in the project's code (race reports: the first access)."""
        if self.pattern == "data_race":
            # "  main.race.func1()" / "      /path/main.go:64 +0x7b"
            for call, loc in itertools.pairwise(self.lines):
                fn = call.strip()
                m = re.match(r"^\s+(\S+\.go):(\d+)", loc)
                if m and fn.endswith(")") and project(fn[: fn.rfind("(")]):
                    return Frame(fn[: fn.rfind("(")], m.group(1), int(m.group(2)))
            return None
        dump = parse_dump("\n".join(self.lines[1:]))
        return dump.goroutines[0].top_frame(project) if dump.goroutines else None


class LogScanner:
    """Feed lines of one log; get back hits once each report is complete."""

    def __init__(self) -> None:
        self._current: Hit | None = None
        self._seen_goroutine = False

    @property
    def capturing(self) -> bool:
        """True while a report has started and is not complete yet."""
        return self._current is not None

    def feed(self, line: str) -> list[Hit]:
        line = line.rstrip("\n")
        done: list[Hit] = []
        if self._current is not None:
            if self._take(line):
                return done
            done.append(self._finish())
        for name, pattern in PATTERNS.items():
            if pattern.match(line):
                self._current = Hit(name, [line])
                self._seen_goroutine = False
                break
        return done

    def _take(self, line: str) -> bool:
        """Add ``line`` to the current report; False when it is not part of it."""
        hit = self._current
        assert hit is not None
        if len(hit.lines) >= _MAX_LINES:
            return False
        if hit.pattern == "data_race":
            if line.strip() == _RACE_END:
                hit.complete = True
                return False
            hit.lines.append(line)
            return True
        if line.startswith("goroutine "):
            if self._seen_goroutine:
                hit.complete = True
                return False
            self._seen_goroutine = True
        elif not line.strip() and self._seen_goroutine:
            hit.complete = True
            return False
        hit.lines.append(line)
        return True

    def _finish(self) -> Hit:
        hit = self._current
        assert hit is not None
        self._current = None
        return hit

    def flush(self) -> list[Hit]:
        """Hand out a report still being captured (the log stopped mid-report)."""
        return [] if self._current is None else [self._finish()]


class LogDetector(Poller):
    """Tail workload log files; write a ``detector.hit`` event per report found.

    ``logs`` maps a workload name to its log file (``backend.log_path(name)``);
    ``project`` attributes a report to the program's code (a
    :class:`~harness.observe.buildinfo.ProjectCode` of its binary: main module);
    files that do not exist yet are picked up when they appear, and a file that
    shrinks (restart, rotation) is read again from its start.
    """

    def __init__(
        self,
        timeline: Timeline,
        logs: Mapping[str, Path],
        *,
        interval: float = 0.2,
        project: Callable[[str], bool] = MAIN_ONLY,
    ) -> None:
        super().__init__()
        self.project = project
        self.timeline = timeline
        self.logs = dict(logs)
        self.interval = interval
        self._offsets = dict.fromkeys(self.logs, 0)
        self._partial = dict.fromkeys(self.logs, "")
        self._scanners = {name: LogScanner() for name in self.logs}
        self._started_at: dict[str, float] = {}
        self.hits: list[tuple[str, Hit]] = []

    def stop(self) -> None:
        """Stop tailing, after one last read that also hands out unfinished reports."""
        super().stop()
        self.poll(final=True)

    def poll(self, *, final: bool = False) -> None:
        """Read what was appended since the last poll and record completed reports."""
        now = self.timeline.now()
        for name, path in self.logs.items():
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < self._offsets[name]:
                self._offsets[name], self._partial[name] = 0, ""
            with path.open("rb") as fh:
                fh.seek(self._offsets[name])
                chunk = fh.read()
            self._offsets[name] += len(chunk)
            text = self._partial[name] + chunk.decode(errors="replace")
            *lines, self._partial[name] = text.split("\n")
            scanner = self._scanners[name]
            hits: list[Hit] = []
            for line in lines:
                if not scanner.capturing:
                    self._started_at[name] = now
                hits += scanner.feed(line)
            # A crashed process writes its whole report at once; when nothing more came
            # in this poll, the report is as complete as it will get.
            if not lines or final:
                hits += scanner.flush()
            for hit in hits:
                self._record(name, hit, self._started_at.get(name, now))

    def _record(self, workload: str, hit: Hit, at: float) -> None:
        top = hit.top_frame(self.project)
        self.hits.append((workload, hit))
        self.timeline.event(
            "detector.hit",
            hit.pattern,
            at=at,
            workload=workload,
            line=hit.first_line,
            stack=hit.stack,
            top_frame=None if top is None else str(top),
            complete=hit.complete,
        )
        log.info("%s in %s log: %s", hit.pattern, workload, hit.first_line)
