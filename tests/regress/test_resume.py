"""A run_tasks stopped early (its instruction budget, a handler's exception) leaves
its tasks where they were; the next run_tasks resumes them.

Rules pinned: resumed tasks compute what they would have, with every probe
mechanism that was half done when the run stopped completed on resume (a hijacked
return, a boosted or single-stepped out-of-line copy); the counter identities hold
at the end; probes may be unregistered and registered between the runs, and an
out-of-line slot a stopped task is about to execute is not recycled under it
(the kernel frees insn slots only once no CPU can be in them:
``synchronize_rcu_tasks`` before ``collect_garbage_slots`` in kernel/kprobes.c).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu import GuestFault, Machine, Task
from probes import Kprobe, register_kprobe, unregister_kprobe
from tests.regress.conftest import Tracer, fib, load, model_ackermann, model_fib

JOBS: list[tuple[str, tuple[int, ...]]] = [
    ("fib", (10,)), ("ackermann", (2, 2)), ("fib", (8,)), ("ackermann", (1, 4))]


def _insn(m: Machine, symbol: str, operands: str) -> int:
    """The address of the first instruction of ``symbol`` with these operands."""
    base = m.resolve(symbol)
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    return next(addr for addr, _size, _mnemonic, ops in md.disasm_lite(m.read(base, 80), base)
                if ops == operands)


def _setup(mode: str) -> tuple[Machine, list[Tracer], list[bool], list[Task]]:
    """Kretprobes on fib and ackermann, a boosted kprobe in fib (``mov rbx, rdi``
    runs out of line, no post_handler) and a single-stepped one in ackermann
    (with a post_handler that checks the step's effect), and the JOBS as tasks."""
    m = load(mode)
    tracers = [Tracer(m, "fib", expect=lambda a, _b: fib(a)).register(),
               Tracer(m, "ackermann", expect=lambda a, b: model_ackermann(a, b)[0]).register()]
    posts: list[bool] = []
    register_kprobe(m, Kprobe(addr=_insn(m, "fib", "rbx, rdi"), pre_handler=lambda kp, regs: 0))
    register_kprobe(m, Kprobe(addr=_insn(m, "ackermann", "rbx, rdi"),
                              pre_handler=lambda kp, regs: 0,
                              post_handler=lambda kp, regs, flags: posts.append(regs.rbx == regs.rdi)))
    tasks = [m.spawn(name, *args) for name, args in JOBS]
    return m, tracers, posts, tasks


def _check(tracers: list[Tracer], posts: list[bool], tasks: list[Task]) -> None:
    models = {"fib": model_fib, "ackermann": model_ackermann}
    assert [t.result for t in tasks] == [models[name](*args)[0] for name, args in JOBS]
    calls = {name: sum(models[job](*args)[1][name] for job, args in JOBS) for name in models}
    for tr in tracers:
        tr.check(calls[tr.symbol])
    assert posts and all(posts)
    assert len(posts) == calls["ackermann"]      # one step per ackermann call, none lost


@pytest.mark.parametrize("budget", [37, 500, 3001])
def test_a_run_stopped_by_its_budget_resumes_where_it_was(probe_mode: str, budget: int) -> None:
    """run_tasks(max_insns=budget) again and again until every task is done: the
    same results and exact counters as one uninterrupted run."""
    m, tracers, posts, tasks = _setup(probe_mode)
    stops = 0
    while True:
        try:
            m.run_tasks(seed=stops, timeslice=25, max_insns=budget)
            break
        except GuestFault as fault:
            assert fault.reason == "insn-budget"
            stops += 1
    assert stops >= 1
    _check(tracers, posts, tasks)


@pytest.mark.parametrize(("where", "mode"), [
    ("kprobe", "int3"), ("kprobe", "optimized"), ("aggregate", "int3"), ("aggregate", "optimized"),
    ("entry_handler", "int3"), ("entry_handler", "optimized"), ("handler", "int3"),
    ("handler", "optimized"),
])
def test_a_run_stopped_by_a_handler_exception_resumes(where: str, mode: str) -> None:
    """One handler raises once (its 40th call): run_tasks raises it; the next
    run_tasks finishes every task, each handler having run exactly once per
    execution of its probe (the hit that raised is completed, not replayed):
    a kprobe in fib's body, a kprobe aggregated with fib's kretprobe at the
    entry, the kretprobe's entry_handler (the raising call then gets no return
    handler, as a non-zero return would) or its return handler."""
    m = load(mode)
    tr = Tracer(m, "fib", expect=lambda a, _b: fib(a)).register()
    count = [0]

    def counted(fn: Callable[..., Any] | None, ret: Any) -> Callable[..., Any]:
        def handler(*args: Any) -> Any:
            count[0] += 1
            if count[0] == 40:
                raise RuntimeError("handler failed on purpose")
            return fn(*args) if fn is not None else ret
        return handler

    if where == "kprobe":
        register_kprobe(m, Kprobe(addr=_insn(m, "fib", "rbx, rdi"), pre_handler=counted(None, 0)))
    elif where == "aggregate":
        register_kprobe(m, Kprobe("fib", pre_handler=counted(None, 0)))
    elif where == "entry_handler":
        tr.rp.entry_handler = counted(tr.rp.entry_handler, 0)
    else:
        tr.rp.handler = counted(tr.rp.handler, None)
    tasks = [m.spawn("fib", n) for n in (10, 7, 9)]
    with pytest.raises(RuntimeError, match="on purpose"):
        m.run_tasks(seed=1, timeslice=40)
    assert not all(t.done for t in tasks)
    m.run_tasks(seed=2, timeslice=40)
    assert [t.result for t in tasks] == [fib(n) for n in (10, 7, 9)]
    calls = sum(model_fib(n)[1]["fib"] for n in (10, 7, 9))
    assert count[0] == calls
    assert tr.errors == [] and tr.rp.nmissed == 0
    assert tr.rp.nfree == tr.rp.maxactive
    if where == "entry_handler":
        assert (tr.entries, tr.returns) == (calls - 1, calls - 1)
    elif where == "handler":
        assert tr.entries == calls and tr.returns == calls - 1
    else:
        assert tr.entries == tr.returns == calls


@pytest.mark.parametrize("mode", [
    "int3",
    "optimized",
])
def test_a_slot_a_stopped_task_will_execute_is_not_recycled(mode: str) -> None:
    """The task whose handler raised is stopped on the boosted copy of its probed
    instruction. The probe is unregistered and another registered before the run
    resumes: the stopped task must still execute the copy it was given."""
    m = load(mode)
    fib_insn = _insn(m, "fib", "rbx, rdi")
    count = [0]

    def pre(kp: Kprobe, regs: object) -> int:
        count[0] += 1
        if count[0] == 30:
            raise RuntimeError("handler failed on purpose")
        return 0

    kp = Kprobe(addr=fib_insn, pre_handler=pre)
    register_kprobe(m, kp)
    tasks = [m.spawn("fib", 10) for _ in range(3)]
    with pytest.raises(RuntimeError, match="on purpose"):
        m.run_tasks(seed=1, timeslice=40)
    unregister_kprobe(m, kp)
    for symbol in ("ackermann", "rs_fib_barrier", "rj_loop"):    # new probes, new slots
        register_kprobe(m, Kprobe(addr=_insn(m, symbol, "rbx, rdi"), pre_handler=lambda k, r: 0))
    m.run_tasks(seed=2, timeslice=40)
    assert [t.fault for t in tasks] == [None] * 3
    assert [t.result for t in tasks] == [fib(10)] * 3
