"""Helpers of the regression suite: machines in both probe modes, a recording
kretprobe, Python models of the guests (results and call counts), the counter
identities, and the guest C programs."""

from __future__ import annotations

import functools
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import guest
from emu import Machine
from probes import (
    Kretprobe,
    KretprobeInstance,
    PtRegs,
    register_kretprobe,
    regs_get_kernel_argument,
    regs_return_value,
    set_optimization,
)
from tests.guests import guest_bin as _guest_bin

PROGRAMS = ("fib", "ackermann", "even_odd", "regress_tail", "regress_jump", "regress_sync",
            "regress_tree")


@pytest.fixture(params=["int3", "optimized"])
def probe_mode(request: pytest.FixtureRequest) -> str:
    return request.param


def load(mode: str = "int3", **options: object) -> Machine:
    """Every guest program the suite uses, assembled into one fresh machine."""
    m = guest.load(*PROGRAMS, **options)
    set_optimization(m, mode == "optimized")
    return m


@pytest.fixture
def machine(probe_mode: str) -> Machine:
    return load(probe_mode)


@pytest.fixture(scope="session")
def guest_bin() -> Path:
    """``guest/bin``, built once per session by ``make -C guest``."""
    return _guest_bin()


def shared_memory(m: Machine, size: int = 4096) -> int:
    """A fresh zeroed read-write page of guest memory (every task sees it)."""
    return m.mem.map_anywhere(size, name="[regress data]").start


# --- Python models of the guest functions: (result, calls per function) -------------------
def _counting(fn: Callable[..., int]) -> Callable[..., tuple[int, Counter[str]]]:
    def model(*args: int) -> tuple[int, Counter[str]]:
        calls: Counter[str] = Counter()
        return fn(calls, *args), calls
    return model


@_counting
def model_fib(calls: Counter[str], n: int) -> int:
    def fib(k: int) -> int:
        calls["fib"] += 1
        return k if k < 2 else fib(k - 1) + fib(k - 2)
    return fib(n)


@_counting
def model_ackermann(calls: Counter[str], m: int, n: int) -> int:
    def ack(a: int, b: int) -> int:
        calls["ackermann"] += 1
        if a == 0:
            return b + 1
        if b == 0:
            return ack(a - 1, 1)
        return ack(a - 1, ack(a, b - 1))
    return ack(m, n)


@_counting
def model_is_even(calls: Counter[str], n: int) -> int:
    name, result = "is_even", 1
    for _ in range(n + 1):           # is_even(n), is_odd(n - 1), ..., down to 0
        calls[name] += 1
        name = "is_odd" if name == "is_even" else "is_even"
    if n % 2:
        result = 0
    return result


@_counting
def model_rj_run(calls: Counter[str], n: int) -> int:
    calls.update({"rj_run": 1, "rj_setjmp": 1, "rj_dive": n + 1, "rj_leaf": 1, "rj_longjmp": 1})
    return 1 + n * (n + 1) // 2


_MASK64 = (1 << 64) - 1


@_counting
def model_rt_node(calls: Counter[str], s: int, d: int) -> int:
    def node(seed: int, depth: int) -> int:
        calls["rt_node"] += 1
        if depth == 0:
            return 1 + fib_counted((seed >> 40) & 7)
        total = 1
        for i in reversed(range((seed >> 33) % 3)):
            total += node((seed * 6364136223846793005 + 1442695040888963407 + i) & _MASK64,
                          depth - 1)
        return total

    def fib_counted(k: int) -> int:
        calls["fib"] += 1
        return k if k < 2 else fib_counted(k - 1) + fib_counted(k - 2)
    return node(s & _MASK64, d)


@functools.cache
def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


MODELS: dict[str, Callable[..., tuple[int, Counter[str]]]] = {
    "fib": model_fib, "ackermann": model_ackermann, "is_even": model_is_even,
    "rj_run": model_rj_run, "rt_node": model_rt_node,
}


# --- a recording kretprobe ----------------------------------------------------------------
_DATA = struct.Struct("<qQQ")        # (tid of the entering task, argument 0, argument 1)


@dataclass
class Tracer:
    """A kretprobe on ``symbol`` that records every handler call.

    The entry_handler stores (tid, arg0, arg1) in ``ri.data``; the return handler
    reads them back and checks them against ``m.current_task``, ``ri.task`` and,
    when ``expect`` is given, the return value ``expect(arg0, arg1)``. Mismatches
    go to ``errors`` (an assert inside a handler would stop the run instead).
    ``skip(arg0)`` true makes the entry_handler return 1 (no return handler).
    """

    m: Machine
    symbol: str
    maxactive: int = 64
    expect: Callable[[int, int], int] | None = None
    skip: Callable[[int], bool] | None = None
    log: list[tuple[str, str, int, int]] | None = None     # shared by several tracers
    data_size: int = _DATA.size      # more is allowed: the rest of ri.data is unused
    entries: int = 0
    skipped: int = 0
    returns: int = 0
    values: list[tuple[int, int, int]] = field(default_factory=list)  # (tid, arg0, result)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rp = Kretprobe(self.symbol, handler=self._return, entry_handler=self._entry,
                            data_size=self.data_size, maxactive=self.maxactive)

    def register(self) -> Tracer:
        register_kretprobe(self.m, self.rp)
        return self

    def _entry(self, ri: KretprobeInstance, regs: PtRegs) -> int:
        self.entries += 1
        task = self.m.current_task
        arg0 = regs_get_kernel_argument(regs, 0)
        if ri.task is not task:
            self.errors.append(f"entry of {self.symbol}({arg0}): ri.task {ri.task} is not {task}")
        if self.skip is not None and self.skip(arg0):
            self.skipped += 1
            return 1
        _DATA.pack_into(ri.data, 0, task.tid, arg0, regs_get_kernel_argument(regs, 1))
        if self.log is not None:
            self.log.append(("entry", self.symbol, task.tid, arg0))
        return 0

    def _return(self, ri: KretprobeInstance, regs: PtRegs) -> None:
        self.returns += 1
        tid, arg0, arg1 = _DATA.unpack_from(ri.data)
        task = self.m.current_task
        value = regs_return_value(regs)
        if tid != task.tid or ri.task is not task:
            self.errors.append(f"return of {self.symbol}({arg0}) entered by tid {tid} "
                               f"seen by tid {task.tid} (ri.task {ri.task})")
        if self.expect is not None and value != self.expect(arg0, arg1):
            self.errors.append(f"{self.symbol}({arg0}, {arg1}) returned {value}, "
                               f"expected {self.expect(arg0, arg1)}")
        self.values.append((task.tid, arg0, value))
        if self.log is not None:
            self.log.append(("return", self.symbol, task.tid, arg0))

    def check(self, calls: int | None = None) -> None:
        """The counter identities once every task is done (``calls``: the oracle's
        count of calls of the function, when known)."""
        rp = self.rp
        assert self.errors == []
        if calls is not None:
            assert self.entries + rp.nmissed == calls, "entry_handler calls + nmissed != calls"
        assert self.returns + rp.nunwound == self.entries - self.skipped, \
            "return handler calls + nunwound != entries that returned 0"
        assert rp.nfree == rp.maxactive, "an instance is not back on the free list"
