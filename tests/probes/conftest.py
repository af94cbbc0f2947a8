"""Probe tests run twice: int3 probes, and optimized probes (code hooks)."""

from __future__ import annotations

import pytest

import guest
from emu import Machine
from probes import set_optimization


@pytest.fixture(params=["int3", "optimized"])
def probe_mode(request: pytest.FixtureRequest) -> str:
    return request.param


def _load(mode: str, *programs: str) -> Machine:
    m = guest.load(*programs)
    set_optimization(m, mode == "optimized")
    return m


@pytest.fixture
def machine(probe_mode: str) -> Machine:
    return _load(probe_mode, "fib", "ackermann", "even_odd", "open_file", "kunit")


@pytest.fixture
def m(probe_mode: str) -> Machine:
    return _load(probe_mode, "kunit")
