"""``Service``: any service as a component, from a command, a Go package or an image.

The generic path for a user's own service (and the one orderd takes, see
:mod:`harness.components.orderd`). Where it comes from, exactly one of:

* ``command``: a binary (absolute path, or a name on PATH) and its arguments.
  On docker, the same binary is wrapped into a ``FROM scratch`` image with the
  libraries it links (:mod:`harness.backends.images`);
* ``go_package``: a directory with a Go ``main`` package; faultline builds it
  from its own module (``go.mod`` at or above it), normal or ``race=True``,
  cached by source hash (:func:`harness.gobuild.build_package`); ``args`` follow;
* ``image`` (docker; later kubernetes) with ``command``: the program inside the
  image (its path there) and its arguments.

**How the service gets its addresses.** The backend assigns every port
(``ports``, names such as ``http``): a free port on 127.0.0.1 (local), the same
number published on 127.0.0.1 (docker). The service learns them from
placeholders in its arguments and environment values, and from environment
variables that are always set:

==================  =========================================  =========================
placeholder         is replaced by                             also in the environment
==================  =========================================  =========================
``{host}``          the address to listen on (``127.0.0.1``    ``FAULTLINE_HOST``
                    on local, ``0.0.0.0`` in a container)
``{port:NAME}``     the number of port NAME                    ``FAULTLINE_PORT_<NAME>``
``{addr:NAME}``     ``{host}:{port:NAME}``                     ``FAULTLINE_ADDR_<NAME>``
``{file:NAME}``     where file NAME (from ``files``) is, as    -
                    the service sees it
``{dep:NAME}``      dependency NAME's ``host:port`` as the     ``FAULTLINE_DEP_<NAME>``
                    service dials it (e.g. a Toxiproxy
                    listener in front of the real upstream)
==================  =========================================  =========================

(``<NAME>`` upper-cased, ``-`` as ``_``.) Dependencies are given as the
harness reaches them (``127.0.0.1:port``); anything outside the allowlist
(loopback, the run's own containers) is refused before anything starts.

Ready when the HTTP ``health`` path on ``health_port`` answers 2xx (``health=None``:
when the first port accepts TCP connections; ``health_ca=FILE``: over HTTPS, the
server's certificate verified against CA file FILE from ``files``, not its name).
``liveness=True`` makes the same probe a liveness probe (``liveness="/livez"``: that path instead):
``failure_threshold`` failures in a row and the backend kills the service, and
its ``restart`` policy applies. Every fault of
:mod:`harness.faults` acts on it by its ``name``; Prometheus scrapes it through
:meth:`Service.scrape_target` (job = ``name``).

>>> svc = Service(backend, run, name="inventoryd", go_package=Path("examples/inventoryd"),
...               args=["--listen={addr:http}"], ports=["http"], health="/healthz")
>>> with svc:                                                     # doctest: +SKIP
...     httpx.get(svc.url + "/items")
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

from harness import gobuild, safety
from harness.backends.base import (
    Backend,
    Placement,
    Probe,
    ProbeKind,
    RestartPolicy,
    WorkloadSpec,
    dial_address,
)
from harness.components.base import Component, log_tail
from harness.components.prometheus import ScrapeTarget
from harness.errors import BackendUnavailable, ComponentStartError, ConfigError
from harness.observe.buildinfo import MAIN_ONLY, ProjectCode, read_buildinfo
from harness.run import Run

__all__ = ["PLACEHOLDERS", "Addresses", "Service", "env_name", "expand"]

log = logging.getLogger(__name__)

PLACEHOLDERS = ("{host}", "{port:NAME}", "{addr:NAME}", "{file:NAME}", "{dep:NAME}")
_PLACEHOLDER = re.compile(r"\{(host|port|addr|file|dep)(?::([A-Za-z0-9_.-]+))?\}")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_PORT = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def env_name(name: str) -> str:
    """``grpc-admin`` -> ``GRPC_ADMIN`` (for ``FAULTLINE_PORT_<NAME>`` and the like)."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


@dataclass(frozen=True)
class Addresses:
    """What the placeholders stand for: the listen host, port numbers, file paths (as
    the service sees them) and dependencies' addresses (as the service dials them)."""

    host: str
    ports: Mapping[str, int]
    files: Mapping[str, str] = field(default_factory=dict)
    deps: Mapping[str, str] = field(default_factory=dict)


def expand(text: str, where: Addresses, *, field: str) -> str:
    """Replace the placeholders (see the module docstring) in ``text``; ConfigError names
    ``field`` when one refers to a port, file or dependency that does not exist."""
    host = where.host
    known: dict[str, Mapping[str, object]] = {
        "port": where.ports,
        "addr": {p: f"{host}:{n}" for p, n in where.ports.items()},
        "file": where.files,
        "dep": where.deps,
    }

    def one(m: re.Match[str]) -> str:
        kind, name = m.group(1), m.group(2)
        if kind == "host":
            if name is not None:
                raise ConfigError(field, f"{m.group(0)}: {{host}} takes no name")
            return host
        if name is None:
            raise ConfigError(field, f"{m.group(0)} needs a name", expected=f"{{{kind}:NAME}}")
        if name not in known[kind]:
            have = ", ".join(sorted(known[kind])) or "none"
            raise ConfigError(field, f"{m.group(0)}: no {kind} {name!r}", expected=f"one of {have}")
        return str(known[kind][name])

    return _PLACEHOLDER.sub(one, text)


class Service(Component):
    """One service process (or container); see the module docstring."""

    def __init__(
        self,
        backend: Backend,
        run: Run,
        *,
        name: str,
        command: Sequence[str] | None = None,
        go_package: Path | str | None = None,
        image: str | None = None,
        args: Sequence[str] = (),
        race: bool = False,
        ports: Sequence[str] = ("http",),
        env: Mapping[str, str] | None = None,
        files: Mapping[str, Path | str] | None = None,
        dependencies: Mapping[str, str] | None = None,
        cpu_limit: float | None = None,
        memory_limit: int | None = None,
        restart: RestartPolicy | None = None,
        health: str | None = "/healthz",
        health_port: str | None = None,
        health_ca: str | None = None,
        liveness: bool | str = False,
        failure_threshold: int = 3,
        metrics_path: str | None = "/metrics",
        metrics_port: str | None = None,
        pprof_port: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.backend = backend
        self.run = run
        self.name = name
        self.command = tuple(command or ())
        self.go_package = Path(go_package) if go_package is not None else None
        self.image = image
        self.args = tuple(args)
        self.race = race
        self.ports = tuple(ports)
        self.env = dict(env or {})
        self.files = {k: Path(v) for k, v in (files or {}).items()}
        self.dependencies = dict(dependencies or {})
        self.cpu_limit = cpu_limit
        self.memory_limit = memory_limit
        self.restart_policy = restart or RestartPolicy()
        self.health = health
        self.health_port = health_port or (self.ports[0] if self.ports else None)
        self.health_ca = health_ca
        self.liveness = liveness
        self.failure_threshold = failure_threshold
        self.metrics_path = metrics_path
        self.metrics_port = metrics_port or (self.ports[0] if self.ports else None)
        self.pprof_port = pprof_port
        self.start_timeout = start_timeout
        self._placement: Placement | None = None
        self._started = False
        # Its own code, from the binary's build info (main module and replaced modules):
        # what goroutine and race findings are attributed to. Set by start().
        self.project: ProjectCode = MAIN_ONLY
        self._validate()

    # -- validation (pure: bad input is refused before anything starts) -------------

    def _validate(self) -> None:
        f = f"service {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError("service.name", f"{self.name!r}", expected="[a-z0-9][a-z0-9_.-]*")
        sources = [
            s
            for s, given in (
                ("go_package", self.go_package is not None),
                ("image", self.image is not None),
                ("command", bool(self.command) and self.image is None),
            )
            if given
        ]
        if len(sources) != 1:
            raise ConfigError(
                f"{f}.source",
                f"{' and '.join(sources) or 'none'} given",
                expected="exactly one of command, go_package, image (+ command)",
            )
        if self.image is not None and not self.command:
            raise ConfigError(
                f"{f}.command", "an image needs the program to run in it", expected="[path, *args]"
            )
        if self.go_package is not None and not self.go_package.is_dir():
            raise ConfigError(f"{f}.go_package", f"{self.go_package} is not a directory")
        if self.command and self.args:
            raise ConfigError(f"{f}.args", "given with command", expected="args inside command")
        if not self.ports:
            raise ConfigError(f"{f}.ports", "no port", expected="at least one port name")
        for p in self.ports:
            if not isinstance(p, str) or not _PORT.match(p):
                raise ConfigError(f"{f}.ports", f"{p!r}", expected="a name like http, grpc_admin")
        if len(set(self.ports)) != len(self.ports):
            raise ConfigError(f"{f}.ports", f"{list(self.ports)} repeats a name")
        for what in ("health_port", "metrics_port", "pprof_port"):
            port = getattr(self, what)
            if port is not None and port not in self.ports:
                raise ConfigError(
                    f"{f}.{what}", f"{port!r} is not a port", expected=" | ".join(self.ports)
                )
        for what in ("health", "metrics_path"):
            path = getattr(self, what)
            if path is not None and not path.startswith("/"):
                raise ConfigError(f"{f}.{what}", f"{path!r}", expected="a path such as /healthz")
        for fname, host_path in self.files.items():
            if not _FILE.match(fname):
                raise ConfigError(f"{f}.files", f"{fname!r}", expected="a plain file name")
            if not host_path.is_file():
                raise ConfigError(f"{f}.files[{fname!r}]", f"{host_path} does not exist")
        for dep, address in self.dependencies.items():
            if not _FILE.match(dep):
                raise ConfigError(f"{f}.dependencies", f"{dep!r}", expected="a plain name")
            safety.check_hostport(address, field=f"{f}.dependencies[{dep!r}]")
        if self.cpu_limit is not None and not self.cpu_limit > 0:
            raise ConfigError(f"{f}.cpu_limit", f"{self.cpu_limit!r}", expected="cores > 0")
        if self.memory_limit is not None and not self.memory_limit > 0:
            raise ConfigError(f"{f}.memory_limit", f"{self.memory_limit!r}", expected="bytes > 0")
        if self.failure_threshold < 1:
            raise ConfigError(
                f"{f}.failure_threshold", f"{self.failure_threshold}", expected=">= 1"
            )
        if self.health_ca is not None and self.health is None:
            raise ConfigError(f"{f}.health_ca", "needs a health path", expected="health='/readyz'")
        if self.liveness is True and self.health is None:
            raise ConfigError(f"{f}.liveness", "needs a health path", expected="health='/healthz'")
        if isinstance(self.liveness, str) and not self.liveness.startswith("/"):
            raise ConfigError(
                f"{f}.liveness", repr(self.liveness), expected="a path such as /livez"
            )
        # Every placeholder must name something that exists: try them with dummy values.
        dummy = Addresses(
            "h",
            dict.fromkeys(self.ports, 1),
            dict.fromkeys(self.files, "f"),
            dict.fromkeys(self.dependencies, "d"),
        )
        for i, a in enumerate((*self.command, *self.args)):
            expand(a, dummy, field=f"{f}.command[{i}]")
        for k, v in self.env.items():
            expand(v, dummy, field=f"{f}.env[{k!r}]")

    # -- lifecycle ---------------------------------------------------------------

    def program(self) -> list[str]:
        """The program and its arguments, before placeholders (builds a Go package)."""
        if self.go_package is not None:
            return [str(gobuild.build_package(self.go_package, race=self.race)), *self.args]
        return list(self.command)

    def extra_args(self, placement: Placement) -> list[str]:
        """Arguments known only once the ports are planned (none here; see OrderService)."""
        return []

    def start(self) -> Self:
        if self._started:
            return self
        if self.image is not None and self.backend.name == "local":
            raise BackendUnavailable(
                f"service {self.name!r} from image {self.image}",
                "an image needs a container backend: --backend docker (or give a binary: "
                "command=, go_package=)",
            )
        if self.health_ca is not None and self.health_ca not in self.files:
            raise ConfigError(
                f"service {self.name!r}.health_ca",
                f"{self.health_ca!r} is not one of the files",
                expected=" | ".join(self.files) or "a CA file given in files",
            )
        program = self.program()
        if self.image is None:
            binary = shutil.which(program[0]) if "/" not in program[0] else program[0]
            if binary is not None:
                self.project = ProjectCode.of(read_buildinfo(Path(binary)))
        p = self.backend.plan(self.name, ports=list(self.ports), files=list(self.files))
        self._placement = p
        deps = {d: dial_address(self.backend, a) for d, a in self.dependencies.items()}
        where = Addresses(p.bind_host, p.ports, p.files, deps)
        f = f"service {self.name!r}"
        argv = [*program, *self.extra_args(p)]
        command = tuple(expand(a, where, field=f"{f}.command[{i}]") for i, a in enumerate(argv))
        env = {k: expand(v, where, field=f"{f}.env[{k!r}]") for k, v in self.env.items()}
        env["FAULTLINE_HOST"] = p.bind_host
        for port, number in p.ports.items():
            env[f"FAULTLINE_PORT_{env_name(port)}"] = str(number)
            env[f"FAULTLINE_ADDR_{env_name(port)}"] = f"{p.bind_host}:{number}"
        for dep, address in self.dependencies.items():
            env[f"FAULTLINE_DEP_{env_name(dep)}"] = dial_address(self.backend, address)
        assert self.health_port is not None
        http = ProbeKind.HTTP if self.health_ca is None else ProbeKind.HTTPS
        if self.health is not None:
            probe = Probe(http, self.health_port, path=self.health, ca_file=self.health_ca)
        else:
            probe = Probe(ProbeKind.TCP, self.health_port)
        live = None
        if self.liveness:
            path = self.liveness if isinstance(self.liveness, str) else self.health
            live = Probe(
                http if path else ProbeKind.TCP,
                self.health_port,
                path=path or "/",
                timeout=2.0,
                failure_threshold=self.failure_threshold,
                ca_file=self.health_ca,
            )
        spec = WorkloadSpec(
            name=self.name,
            command=command,
            placement=p,
            image=self.image,
            env=env,
            files=self.files,
            cpu_limit=self.cpu_limit,
            memory_limit=self.memory_limit,
            restart=self.restart_policy,
            readiness=probe,
            liveness=live,
        )
        self._started = True
        self.backend.start(spec)
        try:
            self.backend.wait_ready(self.name, timeout=self.start_timeout)
        except ComponentStartError as err:
            err.add_note(f"log tail of {self.name}:\n{log_tail(self.backend.log_path(self.name))}")
            raise
        log.info("service %r ready at %s", self.name, self.url)
        return self

    def stop(self) -> None:
        if self._started:
            self._started = False
            self.backend.stop(self.name)

    # -- where it is ---------------------------------------------------------------

    @property
    def placement(self) -> Placement:
        if self._placement is None:
            raise ConfigError(self.name, "the service has not been started")
        return self._placement

    def address(self, port: str | None = None) -> str:
        """``127.0.0.1:<port>`` as the harness (load, probes) reaches ``port`` (default first)."""
        host, number = self.placement.external(port or self.ports[0])
        return f"{host}:{number}"

    def url_of(self, port: str, path: str = "") -> str:
        return self.placement.external_url(port, path=path)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` of the first port: what a locustfile's host is."""
        return self.url_of(self.ports[0])

    @property
    def health_url(self) -> str | None:
        if self.health is None:
            return None
        assert self.health_port is not None
        scheme = "http" if self.health_ca is None else "https"
        return self.placement.external_url(self.health_port, scheme=scheme, path=self.health)

    @property
    def pprof_url(self) -> str | None:
        return None if self.pprof_port is None else self.url_of(self.pprof_port)

    def scrape_target(self, labels: Mapping[str, str] | None = None) -> ScrapeTarget:
        """What Prometheus scrapes: job ``name``, ``metrics_path`` on ``metrics_port``,
        with the memory limit for the memory alerts (fixtures/alerts/go_runtime.yml)."""
        if self.metrics_path is None or self.metrics_port is None:
            raise ConfigError(f"service {self.name!r}.metrics_path", "no metrics endpoint")
        return ScrapeTarget(
            self.name,
            self.address(self.metrics_port),
            metrics_path=self.metrics_path,
            labels=dict(labels or {}),
            memory_limit_bytes=self.memory_limit,
        )

    def healthy(self, timeout: float = 1.0) -> bool:
        """Whether the health path answers 2xx now (TCP connect without a health path)."""
        if self.health_url is None:
            try:
                host, port = self.address(self.health_port).rsplit(":", 1)
                with socket.create_connection((host, int(port)), timeout=timeout):
                    return True
            except OSError:
                return False
        verify: ssl.SSLContext | bool = True
        if self.health_ca is not None:
            verify = ssl.create_default_context(cafile=str(self.files[self.health_ca]))
            verify.check_hostname = False  # health, as the backends probe it: 127.0.0.1
        try:
            return httpx.get(self.health_url, timeout=timeout, verify=verify).is_success
        except httpx.HTTPError:
            return False

    def goroutine_dump(self) -> str:
        """``/debug/pprof/goroutine?debug=2`` from ``pprof_port`` (a Go service)."""
        if self.pprof_url is None:
            raise ConfigError(f"service {self.name!r}.pprof_port", "not set", expected="a port")
        resp = httpx.get(self.pprof_url + "/debug/pprof/goroutine?debug=2", timeout=10.0)
        resp.raise_for_status()
        return resp.text
