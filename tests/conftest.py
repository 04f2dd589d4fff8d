"""Fixtures shared by the contract and integration suites."""

from __future__ import annotations

import pytest

from harness.errors import MissingDependency
from harness.gobuild import build


@pytest.fixture(scope="session")
def workload_bin() -> str:
    """The compliance suite's workload program (``workload sleep|counter|alloc|...``)."""
    try:
        return str(build("workload"))
    except MissingDependency as err:
        pytest.skip(f"{err.what} is missing: {err.fix}")
