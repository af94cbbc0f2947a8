"""The seeded scheduler of assembled tasks: ``Machine.spawn`` and ``Machine.run_tasks``.

Rules pinned (issue #8): tasks have their own registers and stacks and share
memory; slices are seeded, so one seed gives one interleaving and other seeds
others; preemption is at instruction level (a non-atomic counter loses updates);
``pause`` and probe hits end slices; a faulting task ends alone; a handler's
exception, the budget and the timeout end the whole run with a clear message.
"""

from __future__ import annotations

import pytest

import guest
from emu import EmuError, GuestFault, Machine
from probes import Kprobe, Kretprobe, register_kprobe, register_kretprobe
from tests.conftest import fib

# A log that records which task ran each step: shared memory, an atomic index.
_LOGGER = """
log_index: .quad 0
log: .fill 4096, 8, 0
# stepper(tag, n): n times, append tag to the log (atomically), a few instructions apart.
stepper:
    mov rcx, rsi
.again:
    mov rax, 1
    lock xadd [rip + log_index], rax
    lea rdx, [rip + log]
    mov [rdx + rax * 8], rdi
    dec rcx
    jnz .again
    mov rax, rdi
    ret
# racy(n): n non-atomic increments of shared_count (load, add, store).
shared_count: .quad 0
racy:
    mov rcx, rdi
.loop:
    mov rax, [rip + shared_count]
    add rax, 1
    mov [rip + shared_count], rax
    dec rcx
    jnz .loop
    ret
# atomic(n): n lock xadd increments of atomic_count.
atomic_count: .quad 0
atomic:
    mov rcx, rdi
.loop:
    mov eax, 1
    lock xadd [rip + atomic_count], rax
    dec rcx
    jnz .loop
    ret
# negative(): returns -5 (a signed result).
negative:
    mov rax, -5
    ret
# crash(): reads address 8.
crash:
    mov rax, [8]
    ret
# spin(): loops forever.
spin:
    jmp spin
# wait_flag(): spins on flag with pause until another task sets it; returns the spins.
flag: .quad 0
wait_flag:
    xor eax, eax
.wait:
    inc rax
    pause
    cmp qword ptr [rip + flag], 0
    je .wait
    ret
# set_flag(n): counts down n, then sets flag.
set_flag:
    dec rdi
    jnz set_flag
    mov qword ptr [rip + flag], 1
    ret
"""


def _machine() -> Machine:
    return Machine.from_asm(_LOGGER + guest.source("fib"))


def _log(m: Machine) -> list[int]:
    n = m.mem.read_u64(m.resolve("log_index"))
    base = m.resolve("log")
    return [m.mem.read_u64(base + 8 * i) for i in range(n)]


def _interleaving(seed: int, timeslice: int = 40) -> list[int]:
    m = _machine()
    for tag in (1, 2, 3):
        m.spawn("stepper", tag, 200)
    m.run_tasks(seed=seed, timeslice=timeslice)
    return _log(m)


def test_spawn_gives_each_task_a_name_a_tid_and_no_result_yet() -> None:
    m = _machine()
    a = m.spawn("negative")
    b = m.spawn("negative", name="worker")
    assert (a.name, b.name) == (f"task-{a.tid}", "worker")
    assert b.tid > a.tid > 1
    assert (a.done, a.result, a.fault) == (False, None, None)
    assert a.stack is not b.stack and not a.stack.start <= b.stack.start < a.stack.end


def test_results_come_back_in_spawn_order_and_signed() -> None:
    m = _machine()
    tasks = [m.spawn("fib", n) for n in (12, 3, 9)] + [m.spawn("negative")]
    assert m.run_tasks(seed=7, timeslice=25) == tasks
    assert [t.result for t in tasks] == [fib(12), fib(3), fib(9), -5]
    assert all(t.done and t.fault is None for t in tasks)
    assert m.run_tasks() == []             # nothing left to run


def test_the_same_seed_gives_the_same_interleaving() -> None:
    assert _interleaving(3) == _interleaving(3)


def test_different_seeds_give_different_interleavings() -> None:
    runs = {tuple(_interleaving(seed)) for seed in range(6)}
    assert len(runs) == 6
    for log in runs:        # every step of every task is there, interleaved
        assert sorted(log) == [1] * 200 + [2] * 200 + [3] * 200
        assert log != tuple(sorted(log))


def test_preemption_is_per_instruction_a_racy_counter_loses_updates() -> None:
    """Load-add-store increments interrupted between load and store lose updates
    under some seeds; lock xadd never does."""
    lost = []
    for seed in range(4):
        m = _machine()
        for _ in range(4):
            m.spawn("racy", 500)
            m.spawn("atomic", 500)
        m.run_tasks(seed=seed, timeslice=30)
        assert m.mem.read_u64(m.resolve("atomic_count")) == 2000
        lost.append(2000 - m.mem.read_u64(m.resolve("shared_count")))
    assert any(lost) and all(n >= 0 for n in lost)


def test_a_timeslice_of_one_switches_at_every_instruction() -> None:
    m = _machine()
    m.spawn("stepper", 1, 50)
    m.spawn("stepper", 2, 50)
    m.run_tasks(seed=1, timeslice=1)
    log = _log(m)
    runs = sum(1 for a, b in zip(log, log[1:], strict=False) if a != b)
    assert runs > 20


def test_pause_ends_the_slice() -> None:
    """A spin-wait with pause gives the CPU away at each pause: with a huge
    timeslice it spins about as often as the other task needs slices, not a
    timeslice's worth of instructions."""
    m = _machine()
    waiter = m.spawn("wait_flag")
    m.spawn("set_flag", 5000)
    m.run_tasks(seed=0, timeslice=10**7)
    assert 1 <= waiter.result < 5000
    assert m.clock < 50_000


def test_a_faulting_task_ends_alone() -> None:
    m = _machine()
    good = m.spawn("fib", 10)
    bad = m.spawn("crash", name="crasher")
    m.run_tasks(seed=2, timeslice=5)
    assert good.result == fib(10) and good.fault is None
    assert bad.done and bad.result is None
    assert isinstance(bad.fault, GuestFault) and bad.fault.reason == "unmapped"
    assert "crash" in str(bad.fault)


def test_the_budget_bounds_the_whole_run_and_names_the_task() -> None:
    m = _machine()
    m.spawn("fib", 5)
    m.spawn("spin", name="spinner")
    with pytest.raises(GuestFault, match=r"budget of 20000 exhausted at spin.* in spinner") as exc:
        m.run_tasks(seed=0, timeslice=100, max_insns=20_000)
    assert exc.value.reason == "insn-budget"


def test_the_timeout_bounds_the_whole_run() -> None:
    m = _machine()
    m.spawn("spin", name="spinner")
    m.spawn("spin")
    with pytest.raises(GuestFault, match="timeout of 0.2 s") as exc:
        m.run_tasks(timeout=0.2)
    assert exc.value.reason == "timeout"


def test_a_lone_task_runs_uncounted_but_still_under_the_timeout() -> None:
    m = _machine()
    m.spawn("spin")
    with pytest.raises(GuestFault, match="timeout"):
        m.run_tasks(timeout=0.2)


def test_a_handler_exception_aborts_the_run() -> None:
    m = _machine()

    def boom(kp, regs):  # type: ignore[no-untyped-def]
        raise RuntimeError("handler failed")

    register_kprobe(m, Kprobe("fib", pre_handler=boom))
    m.spawn("fib", 5)
    m.spawn("negative")
    with pytest.raises(RuntimeError, match="handler failed"):
        m.run_tasks()


def test_current_task_in_a_handler_is_the_task_that_hit() -> None:
    m = _machine()
    seen: list[tuple[int, int]] = []
    register_kprobe(m, Kprobe("fib", pre_handler=lambda kp, regs: seen.append(
        (m.current_task.tid, regs.rsp)) or 0))
    tasks = {t.tid: t for t in (m.spawn("fib", 6), m.spawn("fib", 7))}
    m.run_tasks(seed=4, timeslice=10)
    assert {tid for tid, _ in seen} == set(tasks)
    for tid, rsp in seen:           # each hit is on its own task's stack
        stack = tasks[tid].stack
        assert stack.start <= rsp < stack.end


def test_probe_hits_are_switch_points() -> None:
    """With a timeslice longer than the whole run, only probe hits switch tasks:
    the return handlers of two tasks still interleave."""
    m = _machine()
    order: list[int] = []
    register_kretprobe(m, Kretprobe("fib", handler=lambda ri, regs: order.append(ri.task.tid),
                                    maxactive=64))
    m.spawn("fib", 11)
    m.spawn("fib", 11)
    m.run_tasks(seed=0, timeslice=10**9)
    changes = sum(1 for a, b in zip(order, order[1:], strict=False) if a != b)
    assert changes > 5


def test_call_from_a_handler_runs_on_the_task_stack() -> None:
    m = _machine()
    seen: list[tuple[int, int]] = []

    def pre(kp, regs):  # type: ignore[no-untyped-def]
        if regs.rdi == 4:
            seen.append((m.current_task.tid, m.call("fib", 6)))
        return 0

    register_kprobe(m, Kprobe("fib", pre_handler=pre))
    tasks = [m.spawn("fib", 6), m.spawn("fib", 5)]
    m.run_tasks(seed=5, timeslice=7)
    assert [t.result for t in tasks] == [fib(6), fib(5)]
    assert sorted(seen) == sorted([(tasks[0].tid, 8)] * 2 + [(tasks[1].tid, 8)])


def test_run_tasks_from_a_handler_is_refused() -> None:
    m = _machine()
    errors: list[Exception] = []

    def pre(kp, regs):  # type: ignore[no-untyped-def]
        try:
            m.run_tasks()
        except EmuError as exc:
            errors.append(exc)
        return 0

    register_kprobe(m, Kprobe("negative", pre_handler=pre))
    m.spawn("negative")
    m.run_tasks()
    assert errors and "inside a probe handler" in str(errors[0])


def test_call_still_works_between_runs() -> None:
    m = _machine()
    m.spawn("fib", 9)
    m.run_tasks(seed=1, timeslice=3)
    assert m.call("fib", 10) == fib(10)
    t = m.spawn("fib", 11)
    m.run_tasks(seed=2)
    assert t.result == fib(11)


def test_bad_arguments() -> None:
    m = _machine()
    with pytest.raises(EmuError, match="at most 6"):
        m.spawn("fib", 1, 2, 3, 4, 5, 6, 7)
    m.spawn("fib", 3)
    with pytest.raises(ValueError, match="timeslice"):
        m.run_tasks(timeslice=0)


def test_this_unicorn_shows_its_instruction_counter() -> None:
    """The exact path (retired counts, cuts at probe hits) is the one tested here;
    a Unicorn whose uc_struct moved would fall back silently without this pin."""
    assert _machine().engine.has_counter


def test_without_the_counter_runs_stay_correct_and_deterministic() -> None:
    """The fallback of a Unicorn build whose counter cannot be found: slices count
    as their full length and probe hits do not cut them; results and replay hold."""
    def run(seed: int) -> tuple[list[int | None], list[int]]:
        m = _machine()
        m.engine._cells = None
        order: list[int] = []
        register_kretprobe(m, Kretprobe("fib", handler=lambda ri, regs: order.append(ri.task.tid),
                                        maxactive=64))
        tasks = [m.spawn("fib", n) for n in (9, 10, 11)]
        m.run_tasks(seed=seed, timeslice=50)
        return [t.result for t in tasks], order

    results, order = run(3)
    assert results == [fib(9), fib(10), fib(11)]
    assert run(3) == (results, order)
    assert len(set(order)) == 3


def test_the_exact_clock_counts_a_lone_task_and_is_exact_at_each_hit() -> None:
    """With exact_clock, now() at a hit is the number of instructions retired
    before it (fib's entry is hit after a fixed number of instructions)."""
    def stamps(exact: bool) -> tuple[list[int], int]:
        m = _machine()
        m.exact_clock = exact
        seen: list[int] = []
        register_kprobe(m, Kprobe("fib", pre_handler=lambda kp, regs: seen.append(m.now()) or 0))
        m.spawn("fib", 5)
        m.run_tasks()
        return seen, m.clock

    exact, total = stamps(True)
    assert len(exact) == 15 and exact == sorted(exact) and exact[0] == 1 and total > exact[-1]
    assert stamps(True) == (exact, total)
    loose, loose_total = stamps(False)
    assert loose == [0] * 15 and loose_total == 0


def test_the_exact_clock_is_the_count_of_instructions_retired() -> None:
    """Against Unicorn's own per-instruction hook on an unprobed run."""
    from unicorn import UC_HOOK_CODE

    m = _machine()
    m.exact_clock = True
    m.spawn("fib", 7)
    m.run_tasks()
    reference = _machine()
    executed = [0]
    reference.uc.hook_add(UC_HOOK_CODE, lambda *_: executed.__setitem__(0, executed[0] + 1))
    assert reference.call("fib", 7) == fib(7)
    assert m.clock == executed[0]
