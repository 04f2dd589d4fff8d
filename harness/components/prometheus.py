"""A real Prometheus (the ``prometheus`` binary) scraping the run's workloads.

Scrape and rule evaluation every 1 s, storage in the run directory, web on a
planned 127.0.0.1 port. Rule files default to every ``fixtures/alerts/*.yml``
except the promtool tests (``*_test.yml``); each is checked with ``promtool
check rules`` before anything starts. ``start()`` returns once ``/-/ready``
answers and every scrape target is up.

Memory limits reach the alert rules as a recording rule: for each target with
``memory_limit_bytes``, a generated ``faultline_limits.yml`` records
``faultline_memory_limit_bytes{job, instance}`` (see fixtures/alerts/go_runtime.yml).

>>> targets = [ScrapeTarget("etcd", "127.0.0.1:2379"),
...            ScrapeTarget("orderd", svc.address, memory_limit_bytes=256 << 20)]
>>> with Prometheus(backend, run, targets) as prom:                 # doctest: +SKIP
...     prom.query('sum(up{job="etcd"})')
3.0
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from harness import safety
from harness.backends.base import (
    Backend,
    Placement,
    Probe,
    ProbeKind,
    WorkloadSpec,
    dial_address,
)
from harness.components.base import Component, log_tail
from harness.errors import ComponentStartError, ConfigError, MissingDependency
from harness.observe.prom import AlertState, PromApi
from harness.run import Run
from harness.wait import WaitTimeout, wait_until

__all__ = [
    "DEFAULT_RULES_DIR",
    "Prometheus",
    "ScrapeTarget",
    "check_rule_file",
    "default_rule_files",
]

log = logging.getLogger(__name__)

DEFAULT_RULES_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "alerts"
_INSTALL = "apt-get install prometheus"
_LIMITS_FILE = "faultline_limits.yml"


def _duration(seconds: float) -> str:
    """Prometheus durations take no fractions: 1.5 s is "1500ms"."""
    return f"{max(1, round(seconds * 1000))}ms"


def default_rule_files(directory: Path = DEFAULT_RULES_DIR) -> list[Path]:
    """Every rule file of ``directory`` except the promtool test files."""
    return sorted(p for p in directory.glob("*.yml") if not p.name.endswith("_test.yml"))


@dataclass(frozen=True)
class ScrapeTarget:
    """One endpoint to scrape. ``address`` is ``host:port`` on loopback (or owned)."""

    job: str
    address: str
    scheme: str = "http"
    metrics_path: str = "/metrics"
    labels: Mapping[str, str] = field(default_factory=dict)
    # TLS (scheme "https"): host paths of the CA, and the client cert and key if needed.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    memory_limit_bytes: int | None = None

    @classmethod
    def from_url(cls, job: str, url: str, **kwargs: Any) -> ScrapeTarget:
        """From a metrics URL such as ``EtcdMember.metrics_url``:
        ``ScrapeTarget.from_url("etcd", m.metrics_url)``."""
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            raise ConfigError(
                f"scrape target {job}", f"{url!r} is not a URL", expected="http://h:p/path"
            )
        return cls(job, parts.netloc, parts.scheme, parts.path or "/metrics", **kwargs)


def check_rule_file(path: Path, field: str) -> None:
    """``promtool check rules`` on ``path``: :class:`ConfigError` naming ``field`` with
    promtool's message when it fails, :class:`MissingDependency` without promtool."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise MissingDependency("promtool", _INSTALL)
    res = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if res.returncode != 0:
        raise ConfigError(
            field,
            f"{path} is not a valid rule file: {(res.stdout + res.stderr).strip()}",
            expected="a file that passes `promtool check rules`",
        )


class Prometheus(Component):
    """Prometheus run by ``backend``; see the module docstring."""

    def __init__(
        self,
        backend: Backend,
        run: Run,
        targets: Sequence[ScrapeTarget],
        *,
        rule_files: Sequence[Path] | None = None,
        name: str = "prometheus",
        scrape_interval: float = 1.0,
        evaluation_interval: float = 1.0,
        wait_for_targets: bool = True,
        start_timeout: float = 30.0,
    ) -> None:
        self.backend = backend
        self.run = run
        self.targets = list(targets)
        self.rule_files = default_rule_files() if rule_files is None else list(rule_files)
        self.name = name
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.wait_for_targets = wait_for_targets
        self.start_timeout = start_timeout
        self._placement: Placement | None = None
        self._started = False
        self._validate()

    def _validate(self) -> None:
        # Pure checks: bad input is reported before anything is started.
        for field_name in ("scrape_interval", "evaluation_interval"):
            if getattr(self, field_name) <= 0:
                raise ConfigError(f"prometheus.{field_name}", "must be > 0", expected="seconds")
        jobs: set[tuple[str, str]] = set()
        for i, t in enumerate(self.targets):
            where = f"prometheus.targets[{i}]"
            safety.check_hostport(t.address, field=f"{where}.address")
            if t.scheme not in ("http", "https"):
                raise ConfigError(f"{where}.scheme", repr(t.scheme), expected="http or https")
            if not t.metrics_path.startswith("/"):
                raise ConfigError(f"{where}.metrics_path", repr(t.metrics_path), expected="/path")
            if (t.job, t.address) in jobs:
                raise ConfigError(where, f"{t.job} {t.address} listed twice")
            jobs.add((t.job, t.address))
            if t.memory_limit_bytes is not None and t.memory_limit_bytes <= 0:
                raise ConfigError(f"{where}.memory_limit_bytes", "must be > 0", expected="bytes")
        for i, p in enumerate(self.rule_files):
            if not Path(p).is_file():
                raise ConfigError(f"prometheus.rule_files[{i}]", f"{p} does not exist")

    # -- lifecycle -------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._placement is None:
            raise RuntimeError("Prometheus is not started")
        return self._placement.external_url("web")

    def start(self) -> Self:
        binary = shutil.which("prometheus")
        if binary is None:
            raise MissingDependency("prometheus", _INSTALL)
        self._check_rules()
        gen = self.run.subdir(f"{self.name}-config")
        files: dict[str, Path] = {}
        for i, p in enumerate(self.rule_files):
            files[f"rules-{i}-{Path(p).name}"] = Path(p)
        limits = self._limits_rules()
        if limits is not None:
            (gen / _LIMITS_FILE).write_text(limits)
            files[_LIMITS_FILE] = gen / _LIMITS_FILE
        for i, t in enumerate(self.targets):
            for kind in ("ca_file", "cert_file", "key_file"):
                path = getattr(t, kind)
                if path is not None:
                    files[f"tls-{i}-{kind}"] = Path(path)
        placement = self.backend.plan(self.name, ["web"], [*files, "prometheus.yml"])
        self._placement = placement
        (gen / "prometheus.yml").write_text(self._config(placement, files))
        files["prometheus.yml"] = gen / "prometheus.yml"
        storage = self.run.subdir(f"{self.name}-data")
        spec = WorkloadSpec(
            name=self.name,
            command=(
                binary,
                f"--config.file={placement.path('prometheus.yml')}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address={placement.bind_host}:{placement.port('web')}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=info",
            ),
            placement=placement,
            env=self.run.child_env(self.name),
            files=files,
            readiness=Probe(ProbeKind.HTTP, "web", path="/-/ready", interval=0.2),
        )
        self._started = True
        self.backend.start(spec)
        try:
            self.backend.wait_ready(self.name, timeout=self.start_timeout)
        except ComponentStartError as err:
            if not any("log tail" in n for n in getattr(err, "__notes__", [])):
                err.add_note(
                    f"log tail of {self.name}:\n{log_tail(self.backend.log_path(self.name))}"
                )
            raise
        if self.wait_for_targets and self.targets:
            self._wait_targets_up()
        log.info("prometheus %s ready at %s", self.name, self.url)
        return self

    def stop(self) -> None:
        if self._started:
            self._started = False
            self.backend.stop(self.name)

    # -- queries ---------------------------------------------------------------

    def query(self, promql: str) -> float | None:
        """Instant query: a scalar or the first element of a vector; None if empty/NaN."""
        with PromApi(self.url, timeout=5.0) as api:
            return api.query(promql)

    def alerts(self) -> list[AlertState]:
        """Active (pending or firing) alerts."""
        with PromApi(self.url, timeout=5.0) as api:
            return api.alerts()

    def alerting_rules(self) -> list[str]:
        """The names of the alerting rules this Prometheus loaded."""
        with PromApi(self.url, timeout=5.0) as api:
            return api.alerting_rules()

    def target_health(self) -> list[dict[str, str]]:
        """Each active target's job, instance, health and last error."""
        with PromApi(self.url, timeout=5.0) as api:
            targets = api.active_targets()
        return [
            {
                "job": t["labels"].get("job", ""),
                "instance": t["labels"].get("instance", ""),
                "health": t["health"],
                "error": t.get("lastError", ""),
            }
            for t in targets
        ]

    # -- internals ---------------------------------------------------------------

    def _check_rules(self) -> None:
        for i, p in enumerate(self.rule_files):
            check_rule_file(p, f"prometheus.rule_files[{i}]")

    def _limits_rules(self) -> str | None:
        rules = [
            {
                "record": "faultline_memory_limit_bytes",
                "expr": f"vector({t.memory_limit_bytes})",
                "labels": {"job": t.job, "instance": t.address},
            }
            for t in self.targets
            if t.memory_limit_bytes is not None
        ]
        if not rules:
            return None
        # JSON is YAML: no YAML library needed to write it.
        return json.dumps({"groups": [{"name": "faultline_limits", "rules": rules}]}, indent=1)

    def _config(self, placement: Placement, files: Mapping[str, Path]) -> str:
        scrape_configs = []
        for i, t in enumerate(self.targets):
            # In a container, 127.0.0.1 is Prometheus itself: dial the target's
            # address on the run's network instead.
            dial = dial_address(self.backend, t.address)
            cfg: dict[str, object] = {
                "job_name": f"{t.job}-{i}",
                "scheme": t.scheme,
                "metrics_path": t.metrics_path,
                "static_configs": [{"targets": [dial], "labels": {**t.labels}}],
                "relabel_configs": [
                    # The job label is the user's job name, shared by a cluster's members.
                    {"target_label": "job", "replacement": t.job},
                    # The instance is the address the harness knows, on every backend.
                    {"target_label": "instance", "replacement": t.address},
                ],
            }
            tls: dict[str, str] = {}
            for kind in ("ca_file", "cert_file", "key_file"):
                if getattr(t, kind) is not None:
                    tls[kind] = placement.path(f"tls-{i}-{kind}")
            if t.server_name:
                tls["server_name"] = t.server_name
            if tls:
                cfg["tls_config"] = tls
            scrape_configs.append(cfg)
        config = {
            "global": {
                "scrape_interval": _duration(self.scrape_interval),
                "scrape_timeout": _duration(self.scrape_interval),
                "evaluation_interval": _duration(self.evaluation_interval),
            },
            "rule_files": [placement.path(n) for n in files if n.startswith("rules-")]
            + ([placement.path(_LIMITS_FILE)] if _LIMITS_FILE in files else []),
            "scrape_configs": scrape_configs,
        }
        return json.dumps(config, indent=1)

    def _wait_targets_up(self) -> None:
        health: list[dict[str, str]] = []

        def all_up() -> bool:
            nonlocal health
            health = self.target_health()
            return len(health) == len(self.targets) and all(h["health"] == "up" for h in health)

        try:
            wait_until(all_up, timeout=self.start_timeout, interval=0.2, what="every target up")
        except WaitTimeout as err:
            exc = ComponentStartError(f"{self.name}: scrape targets not all up: {err}")
            listing = "\n".join(
                f"  {h['job']} {h['instance']}: {h['health']} {h['error']}" for h in health
            )
            exc.add_note(f"targets:\n{listing or '  (none reported)'}")
            exc.add_note(f"log tail of {self.name}:\n{log_tail(self.backend.log_path(self.name))}")
            raise exc from err
