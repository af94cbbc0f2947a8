"""The benchmark cases: guest workloads and the probes put on them."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from unicorn import UC_HOOK_CODE

import guest
from emu import PAGE, Machine, native
from emu._memory import PROT_RX, page_up
from probes import (
    Kprobe,
    Kretprobe,
    KretprobeInstance,
    PtRegs,
    register_kprobe,
    register_kretprobe,
    set_optimization,
)

from ._harness import Case, Workload
from .naive import NaiveKretprobe

CALLS = 30_000          # probe hits per timed call
MANY = 1_000            # functions for the "probes registered elsewhere" cases
MOST = 10_000           # functions for the largest optimized count (issue 12: flat up to 10,000)


def _bench(extra: str = "") -> Machine:
    # No instruction budget: Unicorn's per-instruction counter would add its own cost.
    return Machine.from_asm(guest.source("bench") + "\n" + extra, max_insns=None)


def _leaf_run(n: int) -> Callable[[Machine], None]:
    expected = n * (n + 1) // 2 + n

    def run(m: Machine) -> None:
        got = m.call("leaf_loop", n)
        if got != expected:
            raise AssertionError(f"leaf_loop({n}) = {got}, expected {expected}")
    return run


LEAF = Workload("leaf_loop", _bench, _leaf_run(CALLS), CALLS)
_many_source = guest.many_functions(MANY)
LEAF_MANY = Workload("leaf_loop + 1000 functions", lambda: _bench(_many_source),
                     _leaf_run(CALLS), CALLS)


_FRAMED_HEAD = bytes.fromhex("554889e5b8")     # push rbp; mov rbp, rsp; mov eax, imm32
_FRAMED_TAIL = bytes.fromhex("5dc3")           # pop rbp; ret
_FRAMED_SIZE = len(_FRAMED_HEAD) + 4 + len(_FRAMED_TAIL)


def framed_functions(n: int, base: int) -> tuple[bytes, list[tuple[str, int, int]]]:
    """The machine code and symbols of ``guest.many_functions(n)`` assembled at ``base``,
    built directly: Keystone takes about 0.5 s for 10,000 functions, and every sample
    builds two machines."""
    code = b"".join(_FRAMED_HEAD + struct.pack("<I", i) + _FRAMED_TAIL for i in range(n))
    return code, [(f"f{i}", base + i * _FRAMED_SIZE, _FRAMED_SIZE) for i in range(n)]


def bench_with_functions(n: int) -> Machine:
    """The bench guest plus ``f0 .. f{n-1}`` in a region of their own."""
    m = _bench()
    base = m.mem.map_anywhere(page_up(n * _FRAMED_SIZE), PROT_RX, "[framed functions]",
                              near=m.symbols["leaf"]).start
    code, symbols = framed_functions(n, base)
    m.write(base, code)
    m.symbols.add_many(symbols)
    return m


LEAF_MOST = Workload(f"leaf_loop + {MOST} functions", lambda: bench_with_functions(MOST),
                     _leaf_run(CALLS), CALLS)


def deep_workload(depth: int) -> Workload:
    """``deep_loop(depth, n)``: n recursions ``depth`` deep, n * (depth + 1) calls of deep."""
    n = max(1, CALLS // (depth + 1))

    def run(m: Machine) -> None:
        got = m.call("deep_loop", depth, n)
        if got != n * depth:
            raise AssertionError(f"deep_loop({depth}, {n}) = {got}, expected {n * depth}")
    return Workload(f"deep_loop depth {depth}", _bench, run, n * (depth + 1))


def tasks_workload(ntasks: int) -> Workload:
    """``leaf_loop`` split over ``ntasks`` spawned tasks run together by the
    scheduler (seed 0, the default timeslice): with more than one, slices are
    counted and tasks switch at slice ends and at probe hits. The bare run is
    scheduled the same way, so the per-hit figure is what a hit adds."""
    share = CALLS // ntasks
    expected = share * (share + 1) // 2 + share

    def run(m: Machine) -> None:
        tasks = [m.spawn("leaf_loop", share) for _ in range(ntasks)]
        m.run_tasks(seed=0)
        for task in tasks:
            if task.result != expected:
                raise AssertionError(f"{task.name}: leaf_loop({share}) = {task.result}, "
                                     f"expected {expected}")
    return Workload(f"leaf_loop on {ntasks} tasks", _bench, run, share * ntasks)


# --- probe set-ups ---------------------------------------------------------------------
def _noop(*_: object) -> int:
    return 0


def floor(m: Machine) -> None:
    """A no-op UC_HOOK_CODE callback through the stock binding."""
    leaf = m.symbols["leaf"]
    m.uc.hook_add(UC_HOOK_CODE, lambda uc, address, size, data: None, None, leaf, leaf)


def floor_raw(m: Machine) -> None:
    """A no-op UC_HOOK_CODE callback as a raw ctypes function pointer: the true
    Python floor (what entering Python from a hook costs at the least)."""
    m.hook_code(m.symbols["leaf"], lambda uch, address, size, key: None, raw=True)


def floor_c(m: Machine) -> None:
    """A no-op UC_HOOK_CODE callback in C (emu._native): what Unicorn alone costs."""
    leaf = m.symbols["leaf"]
    m._hooks.add_native(UC_HOOK_CODE, native.ADDRESSES["noop_code"], 0, leaf, leaf)
    m.mem.invalidate_code(leaf, leaf + 1)


def kprobe(offset: int = 0, post: bool = False, optimized: bool = False,
           handler: bool = True) -> Callable[[Machine], None]:
    def setup(m: Machine) -> None:
        set_optimization(m, optimized)
        register_kprobe(m, Kprobe("leaf", offset=offset, pre_handler=_noop if handler else None,
                                  post_handler=_noop if post else None))
    return setup


def kretprobe(optimized: bool = False, func: str = "leaf", maxactive: int = 0,
              handler: bool = True) -> Callable[[Machine], None]:
    def setup(m: Machine) -> None:
        set_optimization(m, optimized)
        register_kretprobe(m, Kretprobe(func, handler=_noop if handler else None, maxactive=maxactive))
    return setup


_STAMP = struct.Struct("<q")


def _stamp(ri: KretprobeInstance, regs: PtRegs) -> int:
    _STAMP.pack_into(ri.data, 0, time.monotonic_ns())
    return 0


def _elapsed(ri: KretprobeInstance, regs: PtRegs) -> int:
    return time.monotonic_ns() - _STAMP.unpack_from(ri.data, 0)[0]


def kretprobe_entry_noop(m: Machine) -> None:
    """A no-op entry_handler and handler: what the mechanism costs with both."""
    register_kretprobe(m, Kretprobe("leaf", handler=_noop, entry_handler=_noop, data_size=8))


def kretprobe_demo(m: Machine) -> None:
    """The demo's work: stamp a time at entry into ri.data, read it back at return."""
    register_kretprobe(m, Kretprobe("leaf", handler=_elapsed, entry_handler=_stamp, data_size=8))


def kprobe_and_kretprobe(m: Machine) -> None:
    register_kprobe(m, Kprobe("leaf", pre_handler=_noop))
    register_kretprobe(m, Kretprobe("leaf", handler=_noop))


def naive(m: Machine) -> None:
    tramp = m.mem.map_anywhere(PAGE, PROT_RX, "[naive trampoline]").start
    m.write(tramp, b"\x90")
    m.extensions["naive"] = NaiveKretprobe(m.uc, m.symbols["leaf"], tramp, lambda uc: None)


def elsewhere(count: int, optimized: bool = False) -> Callable[[Machine], None]:
    """``count`` kprobes on functions the workload never calls."""
    def setup(m: Machine) -> None:
        set_optimization(m, optimized)
        for i in range(count):
            register_kprobe(m, Kprobe(f"f{i}", pre_handler=_noop))
    return setup


def probes_registered(total: int, optimized: bool = False) -> Callable[[Machine], None]:
    """One probe on the workload's function (registered first, so it is among the
    optimized ones) and ``total - 1`` elsewhere."""
    others = elsewhere(total - 1, optimized)

    def setup(m: Machine) -> None:
        set_optimization(m, optimized)
        register_kprobe(m, Kprobe("leaf", pre_handler=_noop))
        others(m)
    return setup


# --- the case list -------------------------------------------------------------------------
FLOOR_STOCK = "floor: stock no-op code hook"
FLOOR_RAW = "floor: raw ctypes no-op code hook"
FLOOR_C = "floor: C no-op code hook"


def floor_cases() -> list[Case]:
    """The three floors (issue 12): the stock binding's hook (the targets of
    _targets.TARGETS are ratios to it), a raw ctypes hook (those of
    NATIVE_TARGETS), and a hook in C when the native core is built."""
    cases = [Case(FLOOR_STOCK, LEAF, floor, group="floor"), Case(FLOOR_RAW, LEAF, floor_raw, group="floor")]
    if native.AVAILABLE:
        cases.append(Case(FLOOR_C, LEAF, floor_c, group="floor"))
    return cases


def main_cases() -> list[Case]:
    return [
        *floor_cases(),
        Case("kprobe, int3, emulated push (entry)", LEAF, kprobe()),
        Case("kprobe, int3, boosted", LEAF, kprobe(offset=1)),
        Case("kprobe, optimized", LEAF, kprobe(optimized=True)),
        Case("kprobe, optimized, no handlers", LEAF, kprobe(optimized=True, handler=False)),
        Case("kprobe with post_handler (single-step)", LEAF, kprobe(offset=1, post=True)),
        Case("kretprobe, int3, no-op handlers", LEAF, kretprobe()),
        Case("kretprobe, optimized, no-op handlers", LEAF, kretprobe(optimized=True)),
        Case("kretprobe, optimized, no handlers", LEAF, kretprobe(optimized=True, handler=False)),
        Case("kretprobe, no-op entry_handler and handler", LEAF, kretprobe_entry_noop),
        Case("kretprobe + entry_handler, data_size=8 (demo)", LEAF, kretprobe_demo),
        Case("kprobe + kretprobe on one function", LEAF, kprobe_and_kretprobe),
        Case("naive kretprobe (stock binding)", LEAF, naive, group="peer"),
    ]


PROBE_COUNTS = (1, 10, 100, 1000)
# Optimized probes are also counted up to 10,000 (issue 12: a flat per-hit cost).
OPTIMIZED_COUNTS = (*PROBE_COUNTS, MOST)
DEPTHS = (1, 100, 1000)
TASKS = (1, 2, 8)


def scale_cases() -> dict[str, list[Case]]:
    return {
        "elsewhere": [Case("1000 int3 probes elsewhere", LEAF_MANY, elsewhere(MANY), "scale"),
                      Case("1000 optimized probes elsewhere", LEAF_MANY,
                           elsewhere(MANY, optimized=True), "scale")],
        "count_int3": [Case(f"{n} probes (int3)", LEAF_MANY, probes_registered(n), "scale")
                       for n in PROBE_COUNTS],
        "count_optimized": [Case(f"{n} probes (optimized)", LEAF_MANY if n <= MANY else LEAF_MOST,
                                 probes_registered(n, optimized=True), "scale")
                            for n in OPTIMIZED_COUNTS],
        "depth": [Case(f"kretprobe, depth {d}", deep_workload(d),
                       kretprobe(func="deep", maxactive=max(DEPTHS) + 10), "scale")
                  for d in DEPTHS],
        "tasks": [Case(f"kretprobe, {t} tasks", tasks_workload(t), kretprobe(), "scale")
                  for t in TASKS],
    }


# --- default settings against raw Unicorn ---------------------------------------------------
def default_vs_raw(reps: int) -> float:
    """Median over ``reps`` paired samples of (time of ``m.call("leaf_loop", N)`` on a
    machine with default settings) / (time of the same code run by ``uc.emu_start``
    directly): what the machine adds to unprobed code (issue 12: <= 1.05)."""
    import statistics

    return statistics.median(_default_vs_raw_once() for _ in range(reps))


def _default_vs_raw_once() -> float:
    import gc

    from emu._regtable import RDI, RSP

    m = Machine.from_asm(guest.source("bench"))          # the defaults: no max_insns given
    start, until = m.symbols["leaf_loop"], m.exit_address

    def raw() -> None:
        gpr = m.cpu.gpr
        gpr[RDI] = CALLS
        gpr[RSP] = m.current_task.stack_top - 72
        m.mem.write_u64(gpr[RSP], until)
        m.uc.emu_start(start, until)

    def ours() -> None:
        m.call("leaf_loop", CALLS)

    times = {}
    for name, fn in (("ours", ours), ("raw", raw)):
        fn()
        gc.disable()
        try:
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
        finally:
            gc.enable()
        times[name] = best
    return times["ours"] / times["raw"]
