"""Kretprobes on concurrent tasks (``Machine.spawn`` + ``run_tasks``): 2-16 tasks
in one probed recursive function, interleaved at random instruction counts and at
probe hits by the seeded scheduler.

Rules pinned: an instance belongs to the task that entered (``ri.task``) and its
return handler runs on that task (``m.current_task is ri.task``) with that call's
data; the free list (maxactive) is shared by all tasks; a barrier that holds
every task inside a probed function at once makes ``nmissed`` exact; same seed,
same interleaving (handler order, results); preemption is per instruction (a
load/add/store counter loses updates, ``lock xadd`` never does).
"""

from __future__ import annotations

import pytest

from emu import Machine, Task
from probes import Kprobe, KretprobeInstance, PtRegs, register_kprobe, unregister_kretprobe
from tests.regress.conftest import Tracer, fib, load, model_fib, shared_memory


def _fib_tasks(m: Machine, ntasks: int) -> list[tuple[int, Task]]:
    args = [5 + (3 * i) % 9 for i in range(ntasks)]
    return [(n, m.spawn("fib", n, name=f"fib{n}-{i}")) for i, n in enumerate(args)]


@pytest.mark.parametrize(("ntasks", "seed", "timeslice"),
                         [(2, 0, 1), (2, 1, 50), (5, 2, 7), (9, 3, 30), (16, 4, 13), (16, 5, 300)])
def test_each_task_sees_its_own_instances(machine: Machine, ntasks: int, seed: int,
                                          timeslice: int) -> None:
    """fib on every task: each return handler runs on the task that entered, reads
    back that entry's (tid, n) and sees fib(n); entries + nmissed == all calls."""
    tr = Tracer(machine, "fib", maxactive=200, expect=lambda a, _b: fib(a)).register()
    tasks = _fib_tasks(machine, ntasks)
    machine.run_tasks(seed=seed, timeslice=timeslice)
    assert [t.result for _n, t in tasks] == [fib(n) for n, _t in tasks]
    calls = sum(model_fib(n)[1]["fib"] for n, _t in tasks)
    tr.check(calls)
    assert tr.rp.nmissed == 0
    for n, task in tasks:
        assert sum(tid == task.tid for tid, _a, _v in tr.values) == model_fib(n)[1]["fib"]
    # Run one after the other, the tasks would change hands ntasks - 1 times.
    tids = [tid for tid, _a, _v in tr.values]
    assert sum(a != b for a, b in zip(tids, tids[1:], strict=False)) >= 2 * ntasks


@pytest.mark.parametrize("maxactive", [1, 4, 15])
def test_shared_free_list_smaller_than_the_concurrency(machine: Machine, maxactive: int) -> None:
    """8 tasks share maxactive instances: which calls miss depends on the schedule,
    but every call either got an entry_handler or counted in nmissed, every handled
    call got its return handler, and the pool is whole at the end."""
    tr = Tracer(machine, "fib", maxactive=maxactive, expect=lambda a, _b: fib(a)).register()
    tasks = _fib_tasks(machine, 8)
    machine.run_tasks(seed=maxactive, timeslice=5)
    assert [t.result for _n, t in tasks] == [fib(n) for n, _t in tasks]
    tr.check(sum(model_fib(n)[1]["fib"] for n, _t in tasks))
    assert tr.rp.nmissed > 0 and tr.rp.nunwound == 0


@pytest.mark.parametrize(("ntasks", "maxactive", "seed"),
                         [(8, 3, 0), (8, 3, 1), (8, 3, 2), (8, 1, 3), (16, 10, 4), (3, 3, 5)])
def test_barrier_makes_nmissed_exact(machine: Machine, ntasks: int, maxactive: int,
                                     seed: int) -> None:
    """Every task enters rs_barrier_fib and waits in rs_barrier until all have
    arrived, so all are inside both functions at once: exactly ntasks - maxactive
    entries of each find the shared pool empty, whatever the seed."""
    count = shared_memory(machine)
    outer = Tracer(machine, "rs_barrier_fib", maxactive=maxactive).register()
    inner = Tracer(machine, "rs_barrier", maxactive=maxactive,
                   expect=lambda _a, _b: ntasks).register()
    fibs = Tracer(machine, "fib", maxactive=500, expect=lambda a, _b: fib(a)).register()
    ks = [4 + i % 7 for i in range(ntasks)]
    tasks = [machine.spawn("rs_barrier_fib", count, ntasks, k) for k in ks]
    machine.run_tasks(seed=seed, timeslice=40)
    assert [t.result for t in tasks] == [fib(k) for k in ks]
    for tr in (outer, inner):
        assert tr.rp.nmissed == max(0, ntasks - maxactive)
        assert tr.returns == min(ntasks, maxactive)
        tr.check(ntasks)
    k_of = {t.tid: k for t, k in zip(tasks, ks, strict=True)}
    assert all(v == fib(k_of[tid]) for tid, _a, v in outer.values)
    fibs.check(sum(model_fib(k)[1]["fib"] for k in ks))


def test_preemption_is_per_instruction() -> None:
    """4 tasks each add 1 to two shared counters 300 times: the load/add/store
    one loses updates under some seeds (a task was preempted between its load and
    its store), the ``lock xadd`` one never does."""
    totals = []
    for seed in range(8):
        m = load()
        data = shared_memory(m)
        for _ in range(4):
            m.spawn("rs_add", data, data + 8, 300)
        m.run_tasks(seed=seed, timeslice=12)
        racy, atomic = (int.from_bytes(m.read(data + off, 8), "little") for off in (0, 8))
        assert atomic == 4 * 300
        assert racy <= 4 * 300
        totals.append(racy)
    assert min(totals) < 4 * 300


def _fib_run(seed: int, mode: str = "int3") -> tuple[list[tuple[str, str, int, int]], list[int | None]]:
    m = load(mode)
    log: list[tuple[str, str, int, int]] = []
    Tracer(m, "fib", maxactive=6, log=log).register()
    Tracer(m, "ackermann", maxactive=6, log=log).register()
    tasks = [m.spawn("fib", 9), m.spawn("ackermann", 2, 2), m.spawn("fib", 7), m.spawn("fib", 8)]
    m.run_tasks(seed=seed, timeslice=25)
    return log, [t.result for t in tasks]


def test_same_seed_same_interleaving(probe_mode: str) -> None:
    """Same program, probes and seed: the identical sequence of (handler, symbol,
    tid, argument) events and identical results; several seeds give at least two
    different interleavings (the seed does drive the schedule)."""
    runs = {seed: _fib_run(seed, probe_mode) for seed in range(4)}
    for seed in (0, 3):
        assert _fib_run(seed, probe_mode) == runs[seed]
    assert {tuple(r) for _log, r in runs.values()} == {(34, 7, 13, 21)}
    assert len({tuple(log) for log, _r in runs.values()}) >= 2


def test_unregister_from_one_task_while_others_are_in_flight(machine: Machine) -> None:
    """A kprobe's pre_handler on one task unregisters the kretprobe while the other
    tasks are deep in fib with hijacked returns: every call still returns the right
    value to the right place, and no return handler runs after the unregister."""
    tr = Tracer(machine, "fib", maxactive=300).register()
    state: dict[str, int] = {"hits": 0, "returns_then": -1}

    def pre(kp: Kprobe, regs: PtRegs) -> int:
        state["hits"] += 1
        if state["hits"] == 400:
            unregister_kretprobe(machine, tr.rp)
            state["returns_then"] = tr.returns
        return 0

    register_kprobe(machine, Kprobe("fib", pre_handler=pre))
    tasks = [machine.spawn("fib", 12) for _ in range(4)]
    machine.run_tasks(seed=9, timeslice=17)
    assert [t.result for t in tasks] == [fib(12)] * 4
    assert state["returns_then"] > 0
    assert tr.returns == state["returns_then"]
    assert tr.errors == []
    assert not tr.rp.registered


def test_a_handler_exception_stops_the_run(machine: Machine) -> None:
    """A return handler that raises on one task stops run_tasks with that
    exception, whatever the other tasks were doing."""
    def boom(ri: KretprobeInstance, regs: PtRegs) -> None:
        if machine.current_task.name == "victim" and regs.rax == 3:
            raise RuntimeError("handler failed on purpose")

    tr = Tracer(machine, "fib").register()
    tr.rp.handler = boom
    machine.spawn("fib", 10, name="bystander")
    machine.spawn("fib", 10, name="victim")
    with pytest.raises(RuntimeError, match="on purpose"):
        machine.run_tasks(seed=0, timeslice=9)
