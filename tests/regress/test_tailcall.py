"""Kretprobes and tail calls (guest/regress_tail.s).

A tail call (``pop rbp; jmp callee``) enters the callee with the caller's return
address slot, which a kretprobe on the caller has already hijacked: the slot
holds the trampoline. As the kernel's rethook does (``arch_rethook_prepare``
saves the trampoline as the callee's return address; the trampoline handler
walks every node of the frame), the callee's instance joins the caller's frame:
when the callee returns, both return handlers run, innermost (the callee) first,
at the real return address, with the callee's return value. Nothing is unwound
(``rp.nunwound`` stays 0): a tail call pops no frame that still had to return.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from emu import Machine
from probes import KretprobeInstance, PtRegs
from tests.regress.conftest import Tracer


def test_both_handlers_run_at_the_one_return_innermost_first(machine: Machine) -> None:
    """tail_outer(n) jmp tail_inner(n + 1): handlers of tail_inner then tail_outer,
    both seeing 2(n + 1) and the same real return address (in tail_driver)."""
    log: list[tuple[str, str, int, int]] = []
    ret_addrs: list[int] = []
    outer = Tracer(machine, "tail_outer", log=log).register()
    inner = Tracer(machine, "tail_inner", log=log).register()
    for tr in (outer, inner):
        handler = tr.rp.handler
        assert handler is not None

        def spy(ri: KretprobeInstance, regs: PtRegs, handler: Callable[..., object] = handler) -> None:
            ret_addrs.append(ri.ret_addr)
            assert regs.rip == ri.ret_addr
            handler(ri, regs)
        tr.rp.handler = spy
    assert machine.call("tail_driver", 5) == 2 * 6 + 15
    assert [(k, s) for k, s, _t, _a in log] == [
        ("entry", "tail_outer"), ("entry", "tail_inner"),
        ("return", "tail_inner"), ("return", "tail_outer")]
    assert [v for _t, _a, v in outer.values] == [v for _t, _a, v in inner.values] == [12]
    assert ret_addrs[0] == ret_addrs[1]
    assert machine.symbolize(ret_addrs[0]).startswith("tail_driver+")
    for tr in (outer, inner):
        tr.check(1)
        assert tr.rp.nunwound == 0


@pytest.mark.parametrize("probed", ["tail_outer", "tail_inner"])
def test_one_probe_sees_the_value_that_reaches_the_caller(machine: Machine, probed: str) -> None:
    """With only one of the two probed, its handler still runs once, at the return
    into tail_driver, with tail_inner's result (the caller's view of tail_outer)."""
    tr = Tracer(machine, probed, expect=lambda _a, _b: 2 * 8).register()
    assert machine.call("tail_outer", 7) == 16
    tr.check(1)
    assert tr.returns == 1


@pytest.mark.parametrize(("maxactive", "n"), [(1, 6), (4, 6), (7, 6), (10, 6), (3, 0)])
def test_self_tail_recursion_shares_one_frame(machine: Machine, maxactive: int, n: int) -> None:
    """tail_count(n, 0) jmps to itself n times: n + 1 entries on one return slot.
    The first maxactive take an instance, the rest are missed (as a linear
    recursion n + 1 deep would be); every handled instance returns at once with
    the final value n(n + 1)/2."""
    tr = Tracer(machine, "tail_count", maxactive=maxactive).register()
    total = n * (n + 1) // 2
    assert machine.call("tail_count", n, 0) == total
    entries = n + 1
    assert tr.rp.nmissed == max(0, entries - maxactive)
    assert tr.returns == min(entries, maxactive)
    assert {v for _t, _a, v in tr.values} == {total}
    # The innermost (latest) call's handler runs first.
    assert [a for _t, a, _v in tr.values] == sorted(a for _t, a, _v in tr.values)
    tr.check(entries)
    assert tr.rp.nunwound == 0


def test_tail_calls_on_concurrent_tasks(machine: Machine) -> None:
    """Tasks interleaved at every few instructions each get their own shared frame:
    tail_count(n) on 6 tasks, each handler on the entering task, counters exact."""
    tr = Tracer(machine, "tail_count", maxactive=100).register()
    tasks = [machine.spawn("tail_count", n, 0) for n in range(6)]
    machine.run_tasks(seed=11, timeslice=3)
    assert [t.result for t in tasks] == [n * (n + 1) // 2 for n in range(6)]
    tr.check(sum(n + 1 for n in range(6)))
    by_task = {t.tid: sorted(a for tid, a, _v in tr.values if tid == t.tid) for t in tasks}
    assert by_task == {t.tid: list(range(n + 1)) for n, t in enumerate(tasks)}
