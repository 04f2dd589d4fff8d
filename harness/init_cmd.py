"""``faultline init``: write a scenario for your own service that runs as written.

It takes where the service comes from (a binary and its arguments, a Go
package faultline builds, or a container image), its ports, health and metrics
paths, your alert rule files and your locustfile, validates all of it, and
writes ``<out>/test_<name>.py``: a pytest scenario (baseline, fault, recovery,
your own alerts) that you run with ``pytest --backend local|docker`` and edit
freely. Nothing is written when any input is bad (exit 2, naming the flag),
and an existing file is kept unless ``--force``.

Ports: faultline assigns them (free ports on 127.0.0.1; the same numbers
published on 127.0.0.1 for a container). The service learns them from
placeholders in its arguments and environment values: ``{addr:NAME}``
(host:port to listen on), ``{port:NAME}``, ``{host}`` (see
:mod:`harness.components.service`), or from ``FAULTLINE_PORT_<NAME>``. With
``--port http=8080``, init rewrites 8080 in the given arguments for you
(``--listen=127.0.0.1:8080`` or ``:8080`` becomes ``--listen={addr:http}``,
a bare ``8080`` becomes ``{port:http}``).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from harness import gobuild
from harness.components.prometheus import check_rule_file
from harness.errors import ConfigError

__all__ = ["FAULTS", "USAGE_EPILOG", "InitSpec", "plan", "register", "render"]

#: For ``faultline --help``: where a user's own service starts.
USAGE_EPILOG = """\
testing your own service:
  faultline init --name NAME (--command "PROG ARGS" | --go-package DIR | --image IMG ...) \\
      --rules RULES.yml --expect-alert ALERT --locustfile LOCUSTFILE.py --out DIR
  pytest DIR/test_NAME.py --backend local      (or --backend docker)
  `faultline init --help` has the flags and an example; README: "Testing your own service"."""


FAULTS = ("pause", "kill")
RESTARTS = ("never", "on-failure", "always")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_PORT = re.compile(r"^([a-z][a-z0-9_-]{0,30})(?:=(\d{1,5}))?$")
_ENV = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
_FILE = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)=(.+)$")
_ALERT = re.compile(r"^\s*-?\s*alert:\s*['\"]?([A-Za-z_:][A-Za-z0-9_:]*)['\"]?\s*$", re.MULTILINE)
_SIZE = re.compile(r"^(\d+)(Ki|Mi|Gi)?$")


@dataclass(frozen=True)
class InitSpec:
    """Everything ``faultline init`` was told, validated (paths absolute)."""

    name: str
    out: Path
    source: str  # "command" | "go_package" | "image"
    program: str  # binary path or name; Go package dir; image reference
    args: tuple[str, ...]  # for an image: the program inside it first
    ports: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    health: str | None = "/healthz"
    metrics: str = "/metrics"
    health_port: str | None = None
    metrics_port: str | None = None
    pprof_port: str | None = None
    rules: tuple[Path, ...] = ()
    alerts: tuple[str, ...] = ()
    expect: tuple[str, ...] = ()
    locustfile: Path = Path()
    rate: float = 20.0
    fault: str = "pause"
    fault_seconds: float = 10.0
    baseline: float = 15.0
    ttd: float = 10.0
    ttr: float = 20.0
    restart: str = "on-failure"
    cpu: float | None = None
    memory: int | None = None
    race: bool = False

    @property
    def path(self) -> Path:
        return self.out / f"test_{self.name.replace('-', '_')}.py"


# -- validation -----------------------------------------------------------------------


def _existing_file(value: str, flag: str) -> Path:
    p = Path(value).expanduser()
    if not p.is_file():
        raise ConfigError(flag, f"{value} does not exist or is not a file")
    return p.resolve()


def _positive(value: float, flag: str, upper: float) -> float:
    if not 0 < value <= upper:
        raise ConfigError(flag, f"{value:g}", expected=f"> 0 and <= {upper:g}")
    return value


def _rewrite_port(text: str, name: str, number: str) -> str:
    """``127.0.0.1:8080`` / ``localhost:8080`` / ``0.0.0.0:8080`` / ``:8080`` -> ``{addr:NAME}``;
    a bare ``8080`` (whole token, or after ``=``) -> ``{port:NAME}``."""
    addr = re.sub(
        rf"(?:127\.0\.0\.1|localhost|0\.0\.0\.0|\[::1\]|\[::\])?:{number}(?!\d)",
        f"{{addr:{name}}}",
        text,
    )
    return re.sub(rf"(^|=){number}$", rf"\g<1>{{port:{name}}}", addr)


def _size(value: str, flag: str) -> int:
    m = _SIZE.match(value)
    if not m or int(m.group(1)) == 0:
        raise ConfigError(flag, repr(value), expected="bytes, or a number with Ki, Mi or Gi")
    return int(m.group(1)) << {None: 0, "Ki": 10, "Mi": 20, "Gi": 30}[m.group(2)]


def plan(ns: argparse.Namespace) -> InitSpec:
    """Validate the parsed flags into an :class:`InitSpec`; ConfigError names the flag."""
    if not _NAME.match(ns.name or ""):
        raise ConfigError("--name", repr(ns.name), expected="lowercase [a-z0-9][a-z0-9_-]*")
    given = [f for f, v in (("--binary", ns.binary), ("--go-package", ns.go_package),
                            ("--image", ns.image)) if v]  # fmt: skip
    if ns.command and not ns.image:
        given.append("--command")
    if len(given) != 1:
        raise ConfigError(
            "--command/--binary/--go-package/--image",
            f"{' and '.join(given) or 'none'} given",
            expected="exactly one (--image goes with --command, the program inside the image)",
        )
    source = given[0]
    args = list(ns.arg)
    if source == "--image":
        if not ns.command:
            raise ConfigError(
                "--command", "required with --image", expected="'/path/in/image args'"
            )
        args = [*shlex.split(ns.command), *args]
        program = ns.image
    elif source == "--command":
        words = shlex.split(ns.command)
        if not words:
            raise ConfigError("--command", "is empty", expected="'program args...'")
        program, args = words[0], [*words[1:], *args]
    elif source == "--binary":
        program = ns.binary
    else:
        pkg = Path(ns.go_package).expanduser()
        if not pkg.is_dir() or not any(pkg.glob("*.go")):
            raise ConfigError("--go-package", f"{ns.go_package} is not a directory of .go files")
        try:
            gobuild.module_root(pkg)
        except ConfigError:
            raise ConfigError(
                "--go-package", f"{ns.go_package} is not inside a Go module (no go.mod)"
            ) from None
        program = str(pkg.resolve())
    if source in ("--command", "--binary"):
        if "/" in program:
            p = Path(program).expanduser()
            if not p.is_file() or not os.access(p, os.X_OK):
                raise ConfigError(source, f"{program} is not an executable file")
            program = str(p.resolve())
        elif shutil.which(program) is None:
            raise ConfigError(source, f"{program!r} is not on PATH", expected="a path or a name")
    if ns.race and source != "--go-package":
        raise ConfigError("--race", "only with --go-package (faultline builds it with -race)")

    env: dict[str, str] = {}
    for item in ns.env:
        m = _ENV.match(item)
        if not m:
            raise ConfigError("--env", repr(item), expected="KEY=VALUE")
        env[m.group(1)] = m.group(2)
    files: dict[str, Path] = {}
    for item in ns.file:
        m = _FILE.match(item)
        if not m:
            raise ConfigError("--file", repr(item), expected="NAME=PATH ({file:NAME} in args)")
        files[m.group(1)] = _existing_file(m.group(2), "--file")

    ports: list[str] = []
    for item in ns.port or ["http"]:
        m = _PORT.match(item)
        if not m:
            raise ConfigError("--port", repr(item), expected="NAME or NAME=PORT (e.g. http=8080)")
        pname, number = m.group(1), m.group(2)
        if pname in ports:
            raise ConfigError("--port", f"{pname!r} given twice")
        ports.append(pname)
        if number is not None:
            if not 0 < int(number) < 65536:
                raise ConfigError("--port", repr(item), expected="a port number 1..65535")
            new_args = [_rewrite_port(a, pname, number) for a in args]
            new_env = {k: _rewrite_port(v, pname, number) for k, v in env.items()}
            if new_args == args and new_env == env:
                raise ConfigError(
                    "--port",
                    f"{number} appears nowhere in the arguments or --env values",
                    expected=f"faultline assigns ports: pass {{addr:{pname}}} or {{port:{pname}}} "
                    f"in an argument, or read FAULTLINE_PORT_{pname.upper().replace('-', '_')}",
                )
            args, env = new_args, new_env
    for what in ("metrics_port", "pprof_port", "health_port"):
        port = getattr(ns, what)
        if port is not None and port not in ports:
            flag = "--" + what.replace("_", "-")
            raise ConfigError(flag, repr(port), expected=" | ".join(ports))
    health = None if ns.health == "none" else ns.health
    if health is None and ns.fault == "pause":
        raise ConfigError(
            "--health",
            "none with --fault pause: the kernel still accepts TCP connections for a frozen "
            "process, so nothing would show the pause took effect",
            expected="an HTTP health path, or --fault kill",
        )
    for flag, path in (("--health", health), ("--metrics", ns.metrics)):
        if path is not None and not path.startswith("/"):
            raise ConfigError(flag, repr(path), expected="a path such as /healthz")

    if not ns.rules:
        raise ConfigError("--rules", "no rule file given", expected="your alert rule file(s)")
    rules = []
    alerts: list[str] = []
    for r in ns.rules:
        path = _existing_file(r, "--rules")
        check_rule_file(path, "--rules")
        rules.append(path)
        alerts += [a for a in _ALERT.findall(path.read_text()) if a not in alerts]
    if not alerts:
        raise ConfigError("--rules", "no alerting rule in the files", expected="- alert: NAME")
    if not ns.expect_alert:
        raise ConfigError(
            "--expect-alert",
            "required: which of your alerts the fault must fire",
            expected=f"one or more of {', '.join(alerts)}",
        )
    for a in ns.expect_alert:
        if a not in alerts:
            raise ConfigError(
                "--expect-alert", f"{a!r} is not in the rules", expected=", ".join(alerts)
            )

    if not ns.locustfile:
        raise ConfigError("--locustfile", "required", expected="your locustfile (.py)")
    locustfile = _existing_file(ns.locustfile, "--locustfile")
    if locustfile.suffix != ".py":
        raise ConfigError("--locustfile", f"{locustfile} is not a .py file")
    try:
        ast.parse(locustfile.read_text(), str(locustfile))
    except SyntaxError as err:
        raise ConfigError("--locustfile", f"{locustfile} does not parse: {err}") from None

    rate = _positive(ns.rate, "--rate", 10_000)
    fault_s = _positive(ns.fault_seconds, "--fault-seconds", 600)
    ttd = _positive(ns.ttd if ns.ttd is not None else fault_s, "--ttd", 600)
    if ns.fault == "pause" and ttd > fault_s:
        raise ConfigError(
            "--ttd",
            f"{ttd:g} s is longer than the pause ({fault_s:g} s)",
            expected="an alert that fires while the service is frozen: --ttd <= --fault-seconds",
        )
    if ns.fault == "kill" and ns.restart == "never":
        raise ConfigError(
            "--restart",
            "never with --fault kill: nothing would bring the service back while it is tested",
            expected="on-failure or always",
        )
    out = Path(ns.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{out} is not a directory")
    spec = InitSpec(
        name=ns.name,
        out=out,
        source=source.removeprefix("--").replace("-", "_").replace("binary", "command"),
        program=program,
        args=tuple(args),
        ports=tuple(ports),
        env=env,
        files=files,
        health=health,
        metrics=ns.metrics,
        health_port=ns.health_port,
        metrics_port=ns.metrics_port,
        pprof_port=ns.pprof_port,
        rules=tuple(rules),
        alerts=tuple(alerts),
        expect=tuple(ns.expect_alert),
        locustfile=locustfile,
        rate=rate,
        fault=ns.fault,
        fault_seconds=fault_s,
        baseline=_positive(ns.baseline, "--baseline", 600),
        ttd=ttd,
        ttr=_positive(ns.ttr, "--ttr", 600),
        restart=ns.restart,
        cpu=None if ns.cpu is None else _positive(ns.cpu, "--cpu", 1024),
        memory=None if ns.memory is None else _size(ns.memory, "--memory"),
        race=ns.race,
    )
    if spec.path.exists() and not ns.force:
        raise ConfigError("--out", f"{spec.path} exists", expected="another --out, or --force")
    return spec


# -- rendering ------------------------------------------------------------------------


def _lit(text: str) -> str:
    """A Python string literal in double quotes (JSON's escapes are Python's too)."""
    return json.dumps(text, ensure_ascii=False)


def _repository(here: Path) -> Path | None:
    """The git work tree the scenario is written into (the nearest ``.git`` above it)."""
    for d in (here, *here.parents):
        if (d / ".git").exists():
            return d
    return None


def _relative(path: Path, here: Path) -> bool:
    """Whether ``path`` is inside the repository the scenario goes in: they move together."""
    repo = _repository(here)
    return repo is not None and path.is_relative_to(repo)


def _path_expr(path: Path, here: Path) -> str:
    """``HERE / "rel/path"`` when ``path`` is in the same git repository as the scenario
    (so both can move together), else ``Path("/absolute/path")``."""
    if not _relative(path, here):
        return f"Path({_lit(str(path))})"
    return f"HERE / {_lit(os.path.relpath(path, here))}"


def _shown(path: Path, here: Path) -> str:
    """A path as the scenario's docstring names it."""
    return os.path.relpath(path, here) if _relative(path, here) else str(path)


def _items(items: list[str], indent: int, brackets: str = "[]") -> str:
    """A list (or tuple) literal: on one line when short, else one item per line."""
    open_, close = brackets[0], brackets[1]
    one = open_ + ", ".join(items) + ("," if close == ")" and len(items) == 1 else "") + close
    if len(one) + indent <= 80:
        return one
    pad = " " * (indent + 4)
    return open_ + "\n" + "".join(f"{pad}{i},\n" for i in items) + " " * indent + close


def _service_kwargs(spec: InitSpec) -> str:
    here = spec.out
    lines: list[str] = []
    strs = [_lit(a) for a in spec.args]
    if spec.source == "go_package":
        lines.append(f"go_package={_path_expr(Path(spec.program), here)},")
        if spec.race:
            lines.append("race=True,")
        lines.append(f"args={_items(strs, 8)},")
    elif spec.source == "image":
        lines.append(f"image={_lit(spec.program)},")
        lines.append(f"command={_items(strs, 8)},")
    else:
        prog = f"str({_path_expr(Path(spec.program), here)})" if "/" in spec.program else None
        lines.append(f"command={_items([prog or _lit(spec.program), *strs], 8)},")
    lines.append(f"ports={_items([_lit(p) for p in spec.ports], 8)},")
    if spec.env:
        pairs = [f"{_lit(k)}: {_lit(v)}" for k, v in spec.env.items()]
        lines.append(f"env={_items(pairs, 8, '{}')},")
    if spec.files:
        pairs = [f"{_lit(k)}: {_path_expr(v, here)}" for k, v in spec.files.items()]
        lines.append(f"files={_items(pairs, 8, '{}')},")
    lines.append(f"health={_lit(spec.health) if spec.health else None},")
    if spec.health_port:
        lines.append(f"health_port={_lit(spec.health_port)},")
    lines.append(f"metrics_path={_lit(spec.metrics)},")
    if spec.metrics_port:
        lines.append(f"metrics_port={_lit(spec.metrics_port)},")
    if spec.pprof_port:
        lines.append(f"pprof_port={_lit(spec.pprof_port)},")
    if spec.cpu is not None:
        lines.append(f"cpu_limit={spec.cpu!r},  # cores")
    if spec.memory is not None:
        lines.append(f"memory_limit={spec.memory!r},  # bytes")
    mode = {"never": "NEVER", "on-failure": "ON_FAILURE", "always": "ALWAYS"}[spec.restart]
    lines.append(f"restart=RestartPolicy(RestartMode.{mode}),")
    return "".join(f"        {line}\n" for line in lines)


_FAULT_DOC = {
    "pause": "$name is frozen for $fault_s s (freezer cgroup on local, `docker pause` on docker)",
    "kill": "$name is killed with SIGKILL; its restart policy ($restart) starts it again",
}
_FAULT_CODE = {
    "pause": """\
        fault = ProcessPause(scope, NAME, seconds=FAULT_S)
""",
    "kill": """\
        fault = ProcessKill(scope, NAME, max_duration=FAULT_S + 30)
""",
}
_EVIDENCE = {
    # What shows the fault took effect: without it, "no alert" could mean "no fault".
    "pause": 'fault_took_effect(tl, "health.failed", fault=fault.name, evidence_name=NAME)',
    "kill": 'fault_took_effect(tl, "workload.restarted", fault=fault.name, evidence_name=NAME)',
}

_TEMPLATE = '''\
"""$name $fault_title under load: do its own alerts catch it, and does it come back?

Written by `faultline init` on $date; it is yours to edit. Run it with pytest (the
faultline plugin comes with the faultline package):

    pytest $file --backend local     # processes on 127.0.0.1, in their own cgroups
    pytest $file --backend docker    # containers on a network of their own

One timeline, four steps:

1. start $name, $source_doc;
   a real Prometheus that loads your rules (RULES) and scrapes $metrics every
   second; and locust running your locustfile at RATE req/s;
2. baseline (BASELINE_S): the load flows and none of your alerts may fire;
3. fault: $fault_doc;
   $expect_doc must fire within the time-to-detect budget;
4. recovery: the fault is reverted; within the time-to-recover budget the health
   endpoint answers again and at least 99 % of requests succeed (held HOLD_S).

Every check goes into the verdict; the report (report.json, report.html: the
timeline with the fault shaded and the alerts marked) is written under
faultline-reports/$name/<run id>/. `pytest ... --budget-scale 2` doubles the budgets
on a slow machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends.base import Backend, RestartMode, RestartPolicy
from harness.checks import (
    Budget,
    alert_fired_within,
    alert_quiet,
    fault_took_effect,
    recovered_within,
)
from harness.components.prometheus import Prometheus
from harness.components.service import Service
from harness.faults.base import Scope
from harness.faults.process import $fault_class
from harness.load import LoadGenerator
from harness.observe.health import HealthWatcher
from harness.observe.oom import OomWatcher
from harness.observe.prom import AlertWatcher
from harness.run import Run
from harness.scenario import MakeIncident
from harness.timeline import Timeline, time_to_recover

pytestmark = [pytest.mark.scenario]

HERE = Path(__file__).resolve().parent

# The service under test. faultline assigns its ports: in the arguments and --env values,
# {addr:NAME} becomes the host:port to listen on ({port:NAME} the number, {host} the host);
# the service also finds them in FAULTLINE_PORT_<NAME>. Prometheus scrapes it as job=NAME.
NAME = $name_repr


def make_service(backend: Backend, run: Run) -> Service:
    return Service(
        backend,
        run,
        name=NAME,
$service_kwargs    )


# Your alert rules (checked with promtool before anything starts) and your load.
RULES = $rules
# Every alert in RULES: none may fire on the baseline.
ALERTS = $alerts
# The alerts the fault must fire, each within the time-to-detect budget.
EXPECT = $expect
LOCUSTFILE = $locustfile
RATE = $rate  # requests per second, paced by faultline

# Phases and budgets, in seconds.
BASELINE_S = $baseline
FAULT_S = $fault_s  # $fault_s_doc
RECOVERY_MAX_S = $recovery_max
BUDGET = Budget(max_ttd=$ttd, max_ttr=$ttr, must_fire=EXPECT)
SUCCESS_OK = 0.99  # the share of requests that must succeed once recovered
HOLD_S = 3.0  # how long health and success must hold to count as recovered


def test_${ident}_${fault}_is_detected_and_recovers(
    make_incident: MakeIncident, backend: Backend, run: Run
) -> None:
    incident = make_incident(
        NAME,
        title=$title_repr,
        seed="faultline init",
        budget=BUDGET,
    )
    incident.key_series = ["load.rps", "load.success_ratio", "load.p95_ms", f"{NAME}.healthy"]
    tl = run.timeline
    with (
        make_service(backend, run) as svc,
        Prometheus(backend, run, [svc.scrape_target()], rule_files=RULES) as prom,
    ):
        load = LoadGenerator(
            run,
            locustfile=LOCUSTFILE,
            host=svc.url,
            rate=RATE,
            duration=BASELINE_S + FAULT_S + RECOVERY_MAX_S + 10,
        )
        scope = Scope(run=run, backend=backend, workloads=[NAME])
$fault_code        observers = (
            load,
            AlertWatcher(prom.url, tl),
            HealthWatcher(svc.healthy, tl, NAME),
            OomWatcher(backend, tl, [NAME]),
        )
        with incident.observing(*observers):
            # 1. Baseline: normal load, no fault.
            with incident.phase("baseline"):
                incident.hold(BASELINE_S)
            # 2. Fault: inject it and wait (at most FAULT_S) for the expected alerts;
            #    leaving the `with` reverts it, on every exit path.
            with incident.phase("fault"), fault:
                incident.hold_until(
                    lambda: all(tl.events("alert.firing", a) for a in EXPECT),
                    timeout=FAULT_S,
                    what=f"{', '.join(EXPECT)} firing",
                )
            reverted = tl.now()
            # 3. Recovery: wait for health and the success ratio to come back and hold.
            with incident.phase("recovery"):
                incident.hold_until(
                    lambda: _recovered(tl, reverted),
                    timeout=RECOVERY_MAX_S,
                    what="health and success ratio back",
                )

    baseline = incident.window("baseline") or (0.0, 0.0)
    incident.check(
        $evidence,
        *(alert_quiet(tl, alert, baseline) for alert in ALERTS),
        *(alert_fired_within(tl, a, fault=fault.name, budget=incident.budget) for a in EXPECT),
        recovered_within(
            tl.series(f"{NAME}.healthy"),
            after=reverted,
            ok=lambda v: v == 1.0,
            hold=HOLD_S,
            budget=incident.budget,
            name=f"{NAME} healthy",
        ),
        recovered_within(
            tl.series("load.success_ratio"),
            after=reverted,
            ok=lambda v: v >= SUCCESS_OK,
            hold=HOLD_S,
            budget=incident.budget,
            name=f"success ratio >= {SUCCESS_OK:.0%}",
        ),
    )
    incident.figure_from_series("throughput (req/s)", "load.rps", worst="min", tail=HOLD_S)
    incident.figure_from_series("success ratio", "load.success_ratio", worst="min", tail=HOLD_S)
    incident.figure_from_series("p95 latency (ms)", "load.p95_ms", worst="max", tail=HOLD_S)
    incident.assert_passed()


def _recovered(tl: Timeline, after: float) -> bool:
    """Healthy and within the SLO for HOLD_S seconds, both, after ``after``."""
    healthy = time_to_recover(
        tl.series(f"{NAME}.healthy"), after=after, ok=lambda v: v == 1.0, hold=HOLD_S
    )
    success = time_to_recover(
        tl.series("load.success_ratio"), after=after, ok=lambda v: v >= SUCCESS_OK, hold=HOLD_S
    )
    return healthy is not None and success is not None
'''


def render(spec: InitSpec) -> str:
    """The scenario file for ``spec``."""
    here = spec.out
    local = spec.source != "image" and "/" in spec.program
    shown = _shown(Path(spec.program), here) if local else spec.program
    source_doc = {
        "go_package": f"built from the Go package\n   {shown}"
        + (" with -race" if spec.race else ""),
        "image": f"from the image\n   {spec.program}",
        "command": f"the program\n   {shown}",
    }[spec.source]
    values: dict[str, Any] = {
        "name": spec.name,
        "name_repr": _lit(spec.name),
        "ident": spec.name.replace("-", "_"),
        "fault": spec.fault,
        "date": datetime.date.today().isoformat(),
        "file": spec.path.name,
        "source_doc": source_doc,
        "metrics": spec.metrics,
        "fault_title": {"pause": "frozen", "kill": "killed"}[spec.fault],
        "fault_doc": Template(_FAULT_DOC[spec.fault]).substitute(
            name=spec.name, fault_s=f"{spec.fault_seconds:g}", restart=spec.restart
        ),
        "expect_doc": " and ".join(spec.expect),
        "fault_class": {"pause": "ProcessPause", "kill": "ProcessKill"}[spec.fault],
        "service_kwargs": _service_kwargs(spec),
        "rules": _items([_path_expr(p, here) for p in spec.rules], 0),
        "alerts": _items([_lit(a) for a in spec.alerts], 0, "()"),
        "expect": _items([_lit(a) for a in spec.expect], 0, "()"),
        "locustfile": _path_expr(spec.locustfile, here),
        "rate": repr(spec.rate),
        "baseline": repr(spec.baseline),
        "fault_s": repr(spec.fault_seconds),
        "fault_s_doc": {
            "pause": "how long the service stays frozen",
            "kill": "how long to wait for the alerts after the kill",
        }[spec.fault],
        "recovery_max": repr(max(spec.ttr * 2, 30.0)),
        "ttd": repr(spec.ttd),
        "ttr": repr(spec.ttr),
        "title_repr": _lit(
            f"{spec.name} {'frozen' if spec.fault == 'pause' else 'killed'} under load: "
            f"{', '.join(spec.expect)} must fire"
        ),
        "fault_code": _FAULT_CODE[spec.fault],
        "evidence": _EVIDENCE[spec.fault],
    }
    return Template(_TEMPLATE).substitute(values)


# -- the command ------------------------------------------------------------------------


def cmd_init(ns: argparse.Namespace) -> int:
    spec = plan(ns)
    text = render(spec)
    spec.out.mkdir(parents=True, exist_ok=True)
    spec.path.write_text(text)
    rel = os.path.relpath(spec.path)
    rel = str(spec.path) if rel.startswith("..") else rel
    print(f"wrote {rel}")
    print("run it:")
    print(f"  pytest {rel} --backend local")
    print(f"  pytest {rel} --backend docker")
    return 0


_EPILOG = """\
where the service comes from (exactly one):
  --command "PROG ARGS"    a binary (path, or a name on PATH) and its arguments
  --binary PATH --arg A    the same, one --arg per argument
  --go-package DIR         a Go main package; faultline builds it from its own go.mod
                           (add --race for a -race build), cached by source hash
  --image IMG --command "PATH-IN-IMAGE ARGS"
                           a container image (docker backend); on docker a binary
                           is otherwise wrapped into a FROM scratch image for you

ports: faultline assigns them. Write {addr:NAME} (host:port to listen on),
{port:NAME} or {host} in arguments and --env values, or read FAULTLINE_PORT_<NAME>;
--port http=8080 rewrites 8080 in the arguments into those placeholders.

example (the example service shipped in examples/inventoryd):
  faultline init --name inventoryd --go-package examples/inventoryd \\
      --arg=--listen=127.0.0.1:8080 --port http=8080 \\
      --rules examples/inventoryd/alerts/inventoryd.yml --expect-alert InventorydDown \\
      --locustfile examples/inventoryd/locustfile.py --out faultline-scenarios
  pytest faultline-scenarios/test_inventoryd.py --backend local
"""


def register(subparsers: Any) -> None:
    """Add ``faultline init`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "init",
        help="write a scenario for your own service (then run it with pytest)",
        description="Write a scenario for your own service that runs as written: "
        "pytest <out>/test_<name>.py --backend local (or docker).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--name", required=True, help="the service's name (its workload, its Prometheus job)"
    )
    src = p.add_argument_group("where the service comes from")
    src.add_argument(
        "--command",
        metavar='"PROG ARGS"',
        help='"PROG ARGS..." (with --image: the program in the image)',
    )
    src.add_argument(
        "--binary", metavar="PATH", help="path (or name on PATH) of the service's binary"
    )
    src.add_argument(
        "--go-package", metavar="DIR", help="directory of a Go main package faultline builds"
    )
    src.add_argument("--image", metavar="IMAGE", help="container image (docker backend)")
    src.add_argument(
        "--arg", action="append", default=[], metavar="ARG", help="one argument (repeatable)"
    )
    src.add_argument("--race", action="store_true", help="build the Go package with -race")
    knobs = p.add_argument_group("the service")
    knobs.add_argument(
        "--port",
        action="append",
        metavar="NAME[=PORT]",
        help="NAME or NAME=PORT (repeatable; default: http)",
    )
    knobs.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="KEY=VALUE (repeatable)"
    )
    knobs.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="NAME=PATH, a file it reads ({file:NAME})",
    )
    knobs.add_argument("--health", default="/healthz", help="HTTP health path, or none (TCP)")
    knobs.add_argument(
        "--health-port", metavar="NAME", help="port of the health path (default: first)"
    )
    knobs.add_argument("--metrics", default="/metrics", help="Prometheus metrics path")
    knobs.add_argument("--metrics-port", help="port NAME of the metrics (default: the first)")
    knobs.add_argument("--pprof-port", help="port NAME of net/http/pprof, if it has one")
    knobs.add_argument("--cpu", type=float, help="CPU limit in cores")
    knobs.add_argument("--memory", help="memory limit: bytes, or with Ki/Mi/Gi")
    knobs.add_argument("--restart", choices=RESTARTS, default="on-failure", help="restart policy")
    test = p.add_argument_group("the scenario")
    test.add_argument(
        "--rules", action="append", metavar="FILE", help="your alert rule file (repeatable)"
    )
    test.add_argument(
        "--expect-alert",
        action="append",
        metavar="ALERT",
        help="an alert the fault must fire (repeatable)",
    )
    test.add_argument("--locustfile", metavar="FILE", help="your locustfile")
    test.add_argument("--rate", type=float, default=20.0, help="load in req/s (default 20)")
    test.add_argument("--fault", choices=FAULTS, default="pause", help="default: pause")
    test.add_argument(
        "--fault-seconds", type=float, default=10.0, help="pause length / wait after a kill"
    )
    test.add_argument("--baseline", type=float, default=15.0, help="baseline seconds")
    test.add_argument("--ttd", type=float, help="time-to-detect budget (default --fault-seconds)")
    test.add_argument("--ttr", type=float, default=20.0, help="time-to-recover budget")
    test.add_argument(
        "--out", metavar="DIR", default=".", help="directory to write test_<name>.py into"
    )
    test.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(fn=cmd_init)
