"""The faultline pytest plugin (registered under ``pytest11``).

Options (each also an ini key and an environment variable; precedence is
marker > CLI > environment > ini > default):

==================  ============================  =========================  ===================
option              ini                           environment                default
==================  ============================  =========================  ===================
--backend           faultline_backend             FAULTLINE_BACKEND          local
--report-dir        faultline_report_dir          FAULTLINE_REPORT_DIR       faultline-reports
--budget-scale      faultline_budget_scale        FAULTLINE_BUDGET_SCALE     1.0
--keep-artifacts    faultline_keep_artifacts      FAULTLINE_KEEP_ARTIFACTS   off
==================  ============================  =========================  ===================

Fixtures: ``faultline_settings``, ``run`` (a :class:`harness.run.Run` that must
close with nothing left behind), ``backend`` (the selected backend, or a skip
saying how to get it), ``pki`` (the run's CA and certificates) and
``make_incident`` (an :class:`harness.scenario.Incident` whose report is written
on every exit path, with TTD/TTR as JUnit properties). A
``BackendUnavailable`` raised anywhere in a test becomes a skip with its fix.

At the end of a session that wrote reports, the alert coverage over them
(:mod:`harness.coverage`: each loaded rule, the scenarios where it fired or
stayed quiet, the rules that never fired) is printed as a terminal section
and written to ``coverage.json`` and ``coverage.html`` in the report directory.

SIGINT and SIGTERM stop the session and run every teardown (reverting every
fault); further signals are ignored until that is done; the exit status is
then 130 or 143.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import FrameType

import pytest

from harness.backends.base import Backend
from harness.checks import Budget
from harness.config import (
    IMPLEMENTED_BACKENDS,
    Settings,
    env,
    first_set,
    parse_backend,
    parse_bool,
    parse_budget_scale,
)
from harness.errors import BackendUnavailable, ConfigError, HarnessError
from harness.pki import Pki
from harness.run import Run
from harness.scenario import Incident, MakeIncident

__all__ = ["SETTINGS_KEY", "make_backend"]

log = logging.getLogger(__name__)

SETTINGS_KEY = pytest.StashKey[Settings]()
_SIGNAL_KEY = pytest.StashKey[list[int]]()
_REPORTS_KEY = pytest.StashKey[list[Path]]()
_COVERAGE_KEY = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faultline", "faultline chaos scenarios")
    group.addoption("--backend", dest="faultline_backend", help="local | docker | kubernetes")
    group.addoption("--report-dir", dest="faultline_report_dir", help="where reports go")
    group.addoption(
        "--budget-scale",
        dest="faultline_budget_scale",
        help="multiply every time budget (slow machines); 1 to 100",
    )
    group.addoption(
        "--keep-artifacts",
        dest="faultline_keep_artifacts",
        action="store_true",
        default=None,
        help="keep logs and timelines of passing scenarios too",
    )
    parser.addini("faultline_backend", "default backend", default="")
    parser.addini("faultline_report_dir", "default report directory", default="")
    parser.addini("faultline_budget_scale", "default budget scale", default="")
    parser.addini("faultline_keep_artifacts", "keep artifacts (true/false)", default="")


def _resolve(config: pytest.Config) -> Settings:
    def pick(opt: str, env_name: str, default: str) -> tuple[str, str]:
        found = first_set(
            (config.getoption(opt), f"--{opt.removeprefix('faultline_').replace('_', '-')}"),
            env(env_name),
            (str(config.getini(opt)), f"ini {opt}"),
        )
        return found or (default, "default")

    backend = parse_backend(*pick("faultline_backend", "FAULTLINE_BACKEND", "local"))
    report_dir, _ = pick("faultline_report_dir", "FAULTLINE_REPORT_DIR", "faultline-reports")
    scale = parse_budget_scale(*pick("faultline_budget_scale", "FAULTLINE_BUDGET_SCALE", "1"))
    keep_opt = config.getoption("faultline_keep_artifacts")
    keep = bool(keep_opt) or parse_bool(
        *pick("faultline_keep_artifacts", "FAULTLINE_KEEP_ARTIFACTS", "false")
    )
    return Settings(backend, Path(report_dir), scale, keep)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "scenario: an incident scenario (real components, minutes of runtime)"
    )
    config.addinivalue_line(
        "markers",
        "backends(*names): the backends this test supports; others skip it",
    )
    try:
        config.stash[SETTINGS_KEY] = _resolve(config)
    except ConfigError as err:
        raise pytest.UsageError(f"faultline: {err}") from None
    config.stash[_SIGNAL_KEY] = []
    config.stash[_REPORTS_KEY] = []
    _install_signal_handlers(config)
    # Every poll of Prometheus and etcd is an HTTP request: keep live logs for the story.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _install_signal_handlers(config: pytest.Config) -> None:
    received = config.stash[_SIGNAL_KEY]

    def later(signum: int, frame: FrameType | None) -> None:
        log.warning("signal %d ignored: reverting faults and cleaning up first", signum)

    def first(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, later)
        # KeyboardInterrupt makes pytest stop and still run every teardown.
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, first)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    received = session.config.stash.get(_SIGNAL_KEY, [])
    if received:
        session.exitstatus = 128 + received[0]
    _write_coverage(session.config)


def _write_coverage(config: pytest.Config) -> None:
    """Alert coverage over the reports this session wrote: coverage.json and .html in
    the report directory, and the lines of the terminal section."""
    paths = config.stash.get(_REPORTS_KEY, [])
    if not paths:
        return
    from harness.coverage import aggregate, render_text, write_coverage
    from harness.report import load_report

    try:
        cov = aggregate(load_report(p) for p in paths)
        json_path, _ = write_coverage(config.stash[SETTINGS_KEY].report_dir, cov)
    except (HarnessError, OSError) as err:  # a report gone or unreadable: say so, not crash
        config.stash[_COVERAGE_KEY] = [f"alert coverage not written: {err}"]
        return
    config.stash[_COVERAGE_KEY] = [*render_text(cov), f"coverage: {json_path} (and .html)"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_COVERAGE_KEY, [])
    if lines:
        terminalreporter.section("faultline alert coverage")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    marker = item.get_closest_marker("backends")
    if marker is not None:
        backend = item.config.stash[SETTINGS_KEY].backend
        if backend not in marker.args:
            pytest.skip(f"runs on {', '.join(marker.args)}; this session uses {backend}")
    try:
        return (yield)
    except BackendUnavailable as err:
        pytest.skip(str(err))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    except BackendUnavailable as err:
        pytest.skip(str(err))


def make_backend(name: str, run: Run) -> Backend:
    """Construct the named backend for ``run``; BackendUnavailable says what is missing."""
    if name == "local":
        from harness.backends.local import LocalBackend

        return LocalBackend(run)
    if name == "docker":
        from harness.backends.docker import DockerBackend

        return DockerBackend(run)
    if name == "kubernetes":
        from harness.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(run)
    raise BackendUnavailable(
        f"the {name} backend",
        "not implemented yet in this version of faultline: use --backend "
        + " or ".join(IMPLEMENTED_BACKENDS),
    )


@pytest.fixture
def faultline_settings(request: pytest.FixtureRequest) -> Settings:
    return request.config.stash[SETTINGS_KEY]


@pytest.fixture
def run() -> Iterator[Run]:
    """A run that must close with nothing left behind (leftovers fail the test)."""
    r = Run.open()
    yield r
    leftovers = r.close()
    if leftovers:
        pytest.fail(f"run {r.run_id} left things behind: {'; '.join(leftovers)}")


@pytest.fixture
def backend(run: Run, faultline_settings: Settings) -> Iterator[Backend]:
    b = make_backend(faultline_settings.backend, run)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def pki(run: Run) -> Pki:
    return Pki.create(run)


@pytest.fixture
def make_incident(
    run: Run,
    faultline_settings: Settings,
    record_property: Callable[[str, object], None],
    request: pytest.FixtureRequest,
) -> Iterator[MakeIncident]:
    """Make the test's :class:`Incident`; its report is written on every exit path."""
    from harness.report import junit_properties

    made: list[Incident] = []

    def make(name: str, *, title: str, seed: str, budget: Budget) -> Incident:
        incident = Incident(
            name=name,
            title=title,
            seed=seed,
            run=run,
            budget=dataclasses.replace(budget, scale=faultline_settings.budget_scale),
            report_dir=faultline_settings.report_dir,
            backend=faultline_settings.backend,
        )
        made.append(incident)
        return incident

    yield make
    for incident in made:
        out = incident.finish()
        request.config.stash[_REPORTS_KEY].append(out / "report.json")
        record_property("report", str(out / "report.json"))
        for key, value in junit_properties(incident.to_dict()):
            record_property(key, value)
