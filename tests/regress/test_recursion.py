"""Kretprobes on recursive guests, one task: fib, ackermann, mutual recursion,
recursion deeper than maxactive. Results and call counts come from Python models
of the guests; every test runs with int3 and with optimized probes."""

from __future__ import annotations

import pytest

from emu import Machine
from tests.regress.conftest import Tracer, fib, model_ackermann, model_fib, model_is_even


@pytest.mark.parametrize("n", [0, 1, 2, 9, 16])
def test_fib_every_return_sees_its_own_entry(machine: Machine, n: int) -> None:
    """fib(n): each return handler reads back the (tid, n) its own entry stored and
    sees fib(n) in RAX; entries == calls of the naive recursion, none missed."""
    tr = Tracer(machine, "fib", expect=lambda a, _b: fib(a)).register()
    result, calls = model_fib(n)
    assert machine.call("fib", n) == result
    tr.check(calls["fib"])
    assert tr.rp.nmissed == tr.rp.nunwound == 0
    assert sorted(arg for _tid, arg, _v in tr.values) == sorted(_fib_args(n))


def _fib_args(n: int) -> list[int]:
    return [n] if n < 2 else [n, *_fib_args(n - 1), *_fib_args(n - 2)]


@pytest.mark.parametrize(("a", "b"), [(0, 0), (1, 3), (2, 3), (3, 2)])
def test_ackermann_two_arguments_per_instance(machine: Machine, a: int, b: int) -> None:
    """ackermann(m, n): both arguments survive in ri.data across the nested call
    whose result becomes the second argument of the next one."""
    result, calls = model_ackermann(a, b)
    tr = Tracer(machine, "ackermann", maxactive=256,
                expect=lambda x, y: model_ackermann(x, y)[0]).register()
    assert machine.call("ackermann", a, b) == result
    tr.check(calls["ackermann"])
    assert tr.returns == calls["ackermann"]


@pytest.mark.parametrize("n", [0, 1, 7, 30])
def test_mutual_recursion_returns_innermost_first(machine: Machine, n: int) -> None:
    """is_even/is_odd: one kretprobe on each; the returns come in the reverse order
    of the entries (LIFO over both probes), each with its function's value."""
    log: list[tuple[str, str, int, int]] = []
    even = Tracer(machine, "is_even", log=log, expect=lambda a, _b: int(a % 2 == 0)).register()
    odd = Tracer(machine, "is_odd", log=log, expect=lambda a, _b: int(a % 2 == 1)).register()
    result, calls = model_is_even(n)
    assert machine.call("is_even", n) == result
    even.check(calls["is_even"])
    odd.check(calls["is_odd"])
    entries = [(sym, arg) for kind, sym, _tid, arg in log if kind == "entry"]
    returns = [(sym, arg) for kind, sym, _tid, arg in log if kind == "return"]
    assert entries == [("is_even" if k % 2 == 0 else "is_odd", n - k) for k in range(n + 1)]
    assert returns == entries[::-1]
    assert log[: n + 1] == [("entry", s, 1, a) for s, a in entries]   # all entries first


@pytest.mark.parametrize(("maxactive", "n"), [(1, 10), (3, 10), (5, 40), (21, 40), (30, 40)])
def test_linear_recursion_deeper_than_maxactive(machine: Machine, maxactive: int, n: int) -> None:
    """A linear recursion d frames deep with maxactive k: exactly max(0, d - k)
    entries find no instance (rp.nmissed) and get no entry or return handler; the
    k outermost calls are the ones handled."""
    even = Tracer(machine, "is_even", maxactive=maxactive).register()
    odd = Tracer(machine, "is_odd", maxactive=maxactive).register()
    result, calls = model_is_even(n)
    assert machine.call("is_even", n) == result
    for tr in (even, odd):
        depth = calls[tr.symbol]
        assert tr.rp.nmissed == max(0, depth - maxactive)
        assert tr.returns == min(depth, maxactive)
        tr.check(depth)
        first = n if tr.symbol == "is_even" else n - 1
        outermost_first = list(range(first, -1, -2))      # the function's args, entry order
        assert sorted(arg for _tid, arg, _v in tr.values) == sorted(outermost_first[:maxactive])


def test_recursion_deeper_than_maxactive_misses_again_on_every_call(machine: Machine) -> None:
    """Instances come back after each call: the second identical call misses
    exactly as many as the first (nmissed accumulates, the pool is whole between)."""
    tr = Tracer(machine, "is_even", maxactive=4).register()
    machine.call("is_even", 20)                 # 11 is_even frames
    assert tr.rp.nmissed == 7 and tr.rp.nfree == 4
    machine.call("is_even", 20)
    assert tr.rp.nmissed == 14
    tr.check(2 * 11)


def test_recursive_task_on_the_scheduler(machine: Machine) -> None:
    """One spawned task runs like m.call: same result, same counters, and m.current_task
    in the handlers is the spawned task."""
    tr = Tracer(machine, "fib", expect=lambda a, _b: fib(a)).register()
    task = machine.spawn("fib", 12, name="solo")
    machine.run_tasks(seed=3, timeslice=7)
    assert task.done and task.fault is None and task.result == fib(12)
    tr.check(model_fib(12)[1]["fib"])
    assert {tid for tid, _a, _v in tr.values} == {task.tid}
