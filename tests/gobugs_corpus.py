"""The Go bug corpus in tests/gobugs: what each program expects, and ``faultline observe`` on it.

Shared by tests/integration/test_observe_gobugs.py (asserts classification and
attribution) and bench/bench_observe.py (recall, attribution accuracy, false
alarms, TTD). The format of a program's header is in tests/gobugs/README.md.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import gobuild
from harness.observe import leakprofile

__all__ = [
    "CORPUS",
    "Outcome",
    "Program",
    "build",
    "observe",
    "programs",
]

CORPUS = Path(__file__).resolve().parent / "gobugs"
LOADFILE = CORPUS / "loadfile.py"
_EXPECT = re.compile(r"^// Expect: (\w+)((?: \w+)*)$", re.M)
_SHAPE = re.compile(r"^// (Bug|Control): (.+)$", re.M)
# "// want", or in shared code "// want <program>": a line a finding may name.
_WANT = re.compile(r"// want(?: ([a-z]\w*))?\b")


@dataclass(frozen=True)
class Program:
    name: str
    kind: str | None  # the expected class; None for a control
    shape: str
    race: bool
    load: bool
    leak_profile: bool  # observed as --go-package (built with the runtime's leak profile)
    deterministic: bool
    want: frozenset[str]  # "cmd/x/main.go:12": the lines a finding may name

    @property
    def control(self) -> bool:
        return self.kind is None


def _wants(name: str, sources: list[Path]) -> frozenset[str]:
    out = set()
    for src in sources:
        for n, line in enumerate(src.read_text().splitlines(), 1):
            m = _WANT.search(line)
            if m and m.group(1) in (None, name):
                out.add(f"{src.relative_to(CORPUS).as_posix()}:{n}")
    return frozenset(out)


def programs() -> list[Program]:
    """Every program of the corpus, bugs and controls, in name order."""
    shared = sorted((CORPUS / "internal").rglob("*.go"))
    out = []
    for main in sorted(CORPUS.glob("cmd/*/main.go")):
        text = main.read_text()
        expect, shape = _EXPECT.search(text), _SHAPE.search(text)
        if expect is None or shape is None:
            raise ValueError(f"{main}: no '// Expect:' or '// Bug:'/'// Control:' line")
        flags = expect.group(2).split()
        kind = None if expect.group(1) == "none" else expect.group(1)
        imports_shared = "example.com/gobugs/internal/" in text
        want = _wants(main.parent.name, [main, *(shared if imports_shared else [])])
        out.append(
            Program(
                name=main.parent.name,
                kind=kind,
                shape=shape.group(2),
                race="race" in flags,
                load="load" in flags,
                leak_profile="leakprofile" in flags,
                deterministic="nondeterministic" not in flags,
                want=want,
            )
        )
    return out


def _package(program: Program) -> Path:
    return CORPUS / "cmd" / program.name.split("+", 1)[0]  # "ctl_x+leakprofile": a variant


def build(program: Program) -> Path:
    """The program's binary (cached; a -race build for the race programs; for the
    leak-profile ones, the build ``observe --go-package`` makes)."""
    if program.leak_profile:
        return gobuild.build_package(
            _package(program),
            race=program.race,
            extra_files={leakprofile.FILE_NAME: leakprofile.SOURCE},
            goexperiment=leakprofile.EXPERIMENT,
        )
    return gobuild.build_package(_package(program), race=program.race)


@dataclass(frozen=True)
class Outcome:
    program: Program
    exit_code: int
    findings: list[dict[str, Any]]  # report.json detections[].detail of each finding
    output: str
    attach_s: list[float]  # how long each delve attachment paused the program
    wall_s: float  # the whole `faultline observe`, start-up and report included

    @property
    def detected(self) -> dict[str, Any] | None:
        """The first finding of the expected class."""
        return next((f for f in self.findings if f["class"] == self.program.kind), None)

    def _names_a_marked_line(self, f: dict[str, Any]) -> bool:
        return any(
            str(f["file"]).endswith(w.rsplit(":", 1)[0]) and f["line"] == int(w.rsplit(":", 1)[1])
            for w in self.program.want
        )

    @property
    def attributed(self) -> bool:
        """The expected finding names a line marked ``// want``."""
        f = self.detected
        return f is not None and self._names_a_marked_line(f)

    @property
    def false_alarms(self) -> list[dict[str, Any]]:
        """Findings on a control; on a bug program, findings of another class that name
        none of its marked lines (one bug seen two ways, a race and its crash, is no alarm)."""
        if self.program.control:
            return list(self.findings)
        return [
            f
            for f in self.findings
            if f["class"] != self.program.kind and not self._names_a_marked_line(f)
        ]


def observe(program: Program, binary: Path, report_dir: Path, *, seconds: float) -> Outcome:
    """``faultline observe`` on ``binary`` as a user runs it; its report read back."""
    args = ["--for", str(seconds), "--report-dir", str(report_dir)]
    if program.race:
        args.append("--race")
    if program.load:
        args += ["--load", str(LOADFILE), "--rate", "40"]
    target = ["--", str(binary)]
    if program.leak_profile:  # faultline builds it (the cached build of build())
        target = ["--go-package", str(_package(program))]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "observe", *args, *target],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    )
    wall = time.monotonic() - started
    reports = sorted(report_dir.glob("observe-*/*/report.json"))
    findings: list[dict[str, Any]] = []
    attach: list[float] = []
    if reports:
        report = json.loads(reports[-1].read_text())
        findings = [d["detail"] for d in report["detections"] if "class" in d["detail"]]
        attach = [v for _, v in report["series"].get("observe.delve_attach_s", [])]
    return Outcome(program, proc.returncode, findings, proc.stdout + proc.stderr, attach, wall)
