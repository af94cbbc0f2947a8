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


def return_now(m: Machine, value: int):  # type: ignore[no-untyped-def]
    """A pre_handler for a function's entry that makes the call return ``value`` at
    once (``bpf_override_return`` style): it moves regs.rip, so it returns 1."""
    def pre(kp, regs) -> int:  # type: ignore[no-untyped-def]
        regs.rax = value & (2**64 - 1)
        regs.rip = int.from_bytes(m.read(regs.rsp, 8), "little")
        regs.rsp += 8
        return 1
    return pre


@functools.cache
def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def preorder(n: int) -> list[int]:
    """The arguments of fib's calls in entry order."""
    return [n] if n < 2 else [n, *preorder(n - 1), *preorder(n - 2)]


def postorder(n: int) -> list[int]:
    """The arguments of fib's calls in return order."""
    return [n] if n < 2 else [*postorder(n - 1), *postorder(n - 2), n]


# The Event fields the tracing issue names, in its order (JSON objects carry exactly these).
EVENT_FIELDS = ["ts", "tid", "pid", "comm", "cpu", "group", "name", "kind", "ip", "caller", "args"]
