"""Service: placeholders and the validation done before anything starts (pure logic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from harness.backends.base import Backend
from harness.components.service import Addresses, Service, env_name, expand
from harness.errors import ConfigError, UnsafeTargetError
from harness.run import Run

WHERE = Addresses(
    "127.0.0.1", {"http": 4100, "grpc-admin": 4101}, {"ca.crt": "/f/ca.crt"}, {"db": "db:5432"}
)
# The constructor only validates: it never touches the backend or the run.
NO_BACKEND = cast(Backend, None)
NO_RUN = cast(Run, None)


def test_placeholders_are_replaced_by_what_the_backend_assigned() -> None:
    assert expand("--listen={addr:http}", WHERE, field="f") == "--listen=127.0.0.1:4100"
    assert expand("{host}:{port:grpc-admin}", WHERE, field="f") == "127.0.0.1:4101"
    assert (
        expand("--ca={file:ca.crt} --db={dep:db}", WHERE, field="f")
        == "--ca=/f/ca.crt --db=db:5432"
    )
    # Other braces are the service's own business.
    assert expand('{"a": 1} {unknown}', WHERE, field="f") == '{"a": 1} {unknown}'
    assert env_name("grpc-admin") == "GRPC_ADMIN"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{port:metrics}", "no port 'metrics'"),
        ("{addr:metrics}", "no addr 'metrics'"),
        ("{file:key.pem}", "no file 'key.pem'"),
        ("{dep:cache}", "no dep 'cache'"),
        ("{host:http}", "takes no name"),
        ("{port}", "needs a name"),
    ],
)
def test_a_placeholder_naming_nothing_is_refused_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        expand(text, WHERE, field="service 'x'.command[2]")
    assert info.value.field == "service 'x'.command[2]"


def _service(**kwargs: Any) -> Service:
    kwargs.setdefault("command", ["/bin/true", "--listen={addr:http}"])
    return Service(NO_BACKEND, NO_RUN, name=kwargs.pop("name", "svc"), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"name": "Bad Name"}, "service.name", "'Bad Name'"),
        ({"go_package": "/nonexistent"}, "source", "go_package and command given"),
        ({"command": []}, "source", "none given"),
        ({"command": [], "go_package": "/nonexistent"}, "go_package", "is not a directory"),
        ({"image": "me/svc:1", "command": []}, "command", "needs the program"),
        ({"args": ["-v"]}, "args", "given with command"),
        ({"ports": []}, "ports", "no port"),
        ({"ports": ["HTTP"]}, "ports", "'HTTP'"),
        ({"ports": ["http", "http"]}, "ports", "repeats"),
        ({"metrics_port": "admin"}, "metrics_port", "'admin' is not a port"),
        ({"health": "healthz"}, "health", "'healthz'"),
        ({"files": {"ca.crt": "/nonexistent/ca.crt"}}, "files['ca.crt']", "does not exist"),
        ({"command": ["/bin/true", "{port:grpc}"]}, "command[1]", "no port 'grpc'"),
        ({"env": {"ADDR": "{addr:admin}"}}, "env['ADDR']", "no addr 'admin'"),
        ({"cpu_limit": 0}, "cpu_limit", "0"),
        ({"liveness": True, "health": None}, "liveness", "needs a health path"),
        ({"health_ca": "ca.crt", "health": None}, "health_ca", "needs a health path"),
    ],
)
def test_bad_service_config_is_refused_before_anything_starts(
    kwargs: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")) as info:
        _service(**kwargs)
    assert info.value.field.endswith(field), info.value.field


@pytest.mark.parametrize("address", ["10.0.0.1:5432", "192.168.1.10:80", "8.8.8.8:53"])
def test_a_dependency_outside_the_allowlist_is_refused(address: str) -> None:
    with pytest.raises(UnsafeTargetError, match="outside what faultline may target") as info:
        _service(dependencies={"db": address})
    assert info.value.field == "service 'svc'.dependencies['db']"


def test_a_loopback_dependency_and_every_source_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "main.go").write_text("package main\n")
    _service(dependencies={"db": "127.0.0.1:5432"}, env={"DB": "{dep:db}"})
    _service(command=[], go_package=tmp_path, args=["--listen={addr:http}"], race=True)
    _service(image="me/svc:1", command=["/app/svc", "--listen={addr:http}"])


def test_an_https_health_ca_must_be_one_of_the_files_by_start() -> None:
    # Subclasses fill ``files`` in start() (certificates exist once a cluster runs),
    # so the CA is checked there, still before the backend is touched.
    svc = _service(health_ca="ca.crt")
    with pytest.raises(ConfigError, match=r"'ca\.crt' is not one of the files") as info:
        svc.start()
    assert info.value.field == "service 'svc'.health_ca"
