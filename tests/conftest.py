"""Shared fixtures: machines loaded with the bundled guest programs."""

from __future__ import annotations

import functools

import pytest

import guest
from emu import Machine


@pytest.fixture(params=["fast", "api"])
def regs_mode(request: pytest.FixtureRequest) -> bool:
    """Run a test with the live register block and with the C-API fallback."""
    return request.param == "fast"


@pytest.fixture
def machine() -> Machine:
    return guest.load("fib", "ackermann", "even_odd", "open_file", "kunit")


@functools.cache
def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)
