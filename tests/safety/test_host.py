"""The host process never crashes: one machine per host thread, bounded nesting.

Rules pinned: a Machine belongs to the host thread inside it (Unicorn engines are
not thread-safe: two threads in one engine segfault, abort with "stack smashing
detected" or compute ``fib(12) = 291``); another thread entering gets
``EmuError`` at once, and machines of different threads run in parallel. Calls
from hooks nest at most ``MAX_CALL_DEPTH`` deep (Unicorn 2.1 segfaults past 64
nested ``emu_start``); probe handlers never get that far, as a hit inside a
handler's call is missed (``kprobe_running``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import guest
from emu import EmuError, Machine
from emu._machine import MAX_CALL_DEPTH
from probes import Kprobe, Kretprobe, disarm_all, register_kprobe, register_kretprobe, set_optimization
from tests.conftest import fib

FIB_ARGS = (10, 12, 14, 15)


def test_machines_of_different_threads_compute_right_results() -> None:
    """Four threads, each building machines (assembling: emu._asm's one Keystone
    engine crashed when two threads used it at once) and computing fib with its
    own machine at the same time."""
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(FIB_ARGS))

    def work(n: int) -> None:
        try:
            start.wait()
            machines = [guest.load("fib") for _ in range(8)]
            results[n] = [m.call("fib", n) for m in machines for _ in range(3)]
        except BaseException as exc:      # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in FIB_ARGS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert results == {n: [fib(n)] * 24 for n in FIB_ARGS}


def _busy(m: Machine, entry: str) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """A thread inside ``m.call(entry)``, held in a hook on ``entry`` until released."""
    inside, release = threading.Event(), threading.Event()

    def hold(_addr: int) -> None:
        inside.set()
        release.wait(10)

    handle = m.hook_code(m.resolve(entry), hold)
    thread = threading.Thread(target=lambda: m.call(entry, 5))
    thread.start()
    assert inside.wait(10)
    thread.handle = handle  # type: ignore[attr-defined]
    return thread, inside, release


def test_a_second_thread_entering_a_busy_machine_gets_emuerror_at_once() -> None:
    m = guest.load("fib")
    thread, _inside, release = _busy(m, "fib")
    attempts: list[Callable[[], Any]] = [
        lambda: m.call("fib", 3),
        lambda: m.spawn("fib", 3),
        m.run_tasks,
        lambda: m.hook_code(m.resolve("fib"), lambda _a: None),
        lambda: m.exclusive().__enter__(),
        lambda: m.write(m.resolve("fib"), m.read(m.resolve("fib"), 1)),
        lambda: m.unhook(thread.handle),  # type: ignore[attr-defined]
        lambda: register_kprobe(m, Kprobe("fib", offset=4)),
        lambda: register_kretprobe(m, Kretprobe("fib")),
        lambda: set_optimization(m, True),
        lambda: disarm_all(m),
    ]
    try:
        for attempt in attempts:
            t0 = time.monotonic()
            with pytest.raises(EmuError, match="machine in use by thread"):
                attempt()
            assert time.monotonic() - t0 < 1.0
    finally:
        release.set()
        thread.join(10)
    m.unhook(thread.handle)  # type: ignore[attr-defined]
    assert m.call("fib", 12) == fib(12)          # free again once the thread left


def test_the_error_names_the_thread_inside() -> None:
    m = guest.load("fib")
    thread, _inside, release = _busy(m, "fib")
    try:
        with pytest.raises(EmuError) as err:
            m.call("fib", 1)
    finally:
        release.set()
        thread.join(10)
    assert thread.name in str(err.value) and "its own Machine" in str(err.value)


def test_the_owning_thread_reenters_freely() -> None:
    """Hooks and handlers of the thread inside call back into the machine."""
    m = guest.load("fib")
    seen: list[int] = []
    m.hook_code(m.resolve("fib"), lambda _a: seen.append(m.call("fib", 2)) if m.depth == 1 else None)
    with m.exclusive():
        assert m.call("fib", 4) == fib(4)
    assert seen and set(seen) == {1}


NEST = """
f:
    nop
    ret
"""


def test_calls_from_hooks_nest_at_most_max_call_depth() -> None:
    """A hook that calls into the guest from every level: refused past the cap with
    EmuError (no segfault), and the machine works afterwards."""
    m = Machine.from_asm(NEST, max_insns=None)
    depths: list[int] = []

    def again(_addr: int) -> None:
        depths.append(m.depth)
        m.call("f")

    m.hook_code(m.resolve("f"), again)
    with pytest.raises(EmuError, match=f"nest at most {MAX_CALL_DEPTH} deep"):
        m.call("f")
    assert max(depths) == MAX_CALL_DEPTH
    m.unhook(next(iter(m._code_hooks)))
    assert m.depth == 0
    assert m.call("f") == m.call("f")


def test_a_handler_calling_a_probed_function_misses_the_nested_hits() -> None:
    """Probe handlers cannot recurse: a hit during a handler's call is missed
    (``kprobe_running``), so however deep the guest recurses the nesting is 2."""
    m = guest.load("fib")
    depths: list[int] = []

    def pre(kp: Kprobe, regs: Any) -> int:
        depths.append(m.depth)
        assert m.call("fib", 6) == fib(6)
        return 0

    kp = Kprobe(symbol_name="fib", pre_handler=pre)
    register_kprobe(m, kp)
    assert m.call("fib", 5) == fib(5)
    assert set(depths) == {1}
    assert len(depths) + kp.nmissed == 15 + 15 * 25     # fib(5): 15 calls; fib(6): 25 each


def test_a_handler_whose_call_recurses_through_hooks_gets_emuerror() -> None:
    """What can reach the cap under probes: a handler's call into code with an
    emu-level hook that calls again. The EmuError ends the outer call."""
    m = Machine.from_asm(NEST + "g:\n    call f\n    ret\n", max_insns=None)
    m.hook_code(m.resolve("f"), lambda _a: m.call("f"))
    register_kprobe(m, Kprobe(symbol_name="g", pre_handler=lambda kp, regs: m.call("f") and 0))
    with pytest.raises(EmuError, match="nest at most"):
        m.call("g")
