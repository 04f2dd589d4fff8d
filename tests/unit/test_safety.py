import os

import pytest

from harness import safety
from harness.errors import UnsafeTargetError


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"])
def test_loopback_is_allowed(host: str) -> None:
    assert safety.check_host(host) == host


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "8.8.8.8", "192.168.1.1", "172.17.0.1", "0.0.0.0", "2001:db8::1"]
)
def test_other_addresses_are_refused_naming_the_field(host: str) -> None:
    with pytest.raises(UnsafeTargetError) as err:
        safety.check_host(host, field="scenario.load.host")
    assert "scenario.load.host" in str(err.value)
    assert "127.0.0.0/8" in str(err.value)


def test_an_address_faultline_made_is_allowed_until_forgotten() -> None:
    safety.allow_owned_address("10.200.0.2")
    try:
        assert safety.check_host("10.200.0.2") == "10.200.0.2"
    finally:
        safety.forget_owned_addresses()
    with pytest.raises(UnsafeTargetError):
        safety.check_host("10.200.0.2")


@pytest.mark.parametrize("target", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "x:y"])
def test_malformed_hostport_is_refused(target: str) -> None:
    with pytest.raises(UnsafeTargetError):
        safety.check_hostport(target)


def test_hostport_splits_ipv6() -> None:
    assert safety.check_hostport("[::1]:2379") == ("[::1]", 2379)


def test_pid_1_and_untagged_processes_are_refused() -> None:
    with pytest.raises(UnsafeTargetError, match="pid 1"):
        safety.check_pid(1, "some-run")
    with pytest.raises(UnsafeTargetError, match="not started by faultline"):
        safety.check_pid(os.getpid(), "some-run")
