"""Property-based runs: random workloads of recursive calls (fib, ackermann,
is_even/is_odd, longjmp from depth, pseudo-random call trees) on 1-8 tasks, random
seeds and timeslices, kretprobes with random maxactive, data_size and
entry-handler skips, and probes registered and unregistered by handlers while
the tasks run. Whatever hypothesis picks:

- every task's result equals the Python model's and the unprobed run's (same seed);
- ``entry_handler calls + rp.nmissed == calls of the function`` (the model's count);
- ``return handler calls + rp.nunwound == entry_handler calls that returned 0``;
- each return handler runs on the entering task and reads its own entry's data;
- every instance is back on the free list once all tasks are done;
- after unregistering everything, guest code is byte for byte what it was.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu import Machine
from probes import (
    Kprobe,
    Kretprobe,
    KretprobeInstance,
    PtRegs,
    register_kprobe,
    register_kretprobe,
    unregister_kprobe,
    unregister_kretprobe,
)
from tests.regress.conftest import MODELS, Tracer, load

# Functions a task may run, with argument ranges small enough for a quick run.
JOBS = st.one_of(
    st.tuples(st.just("fib"), st.integers(0, 11)),
    st.tuples(st.just("ackermann"), st.integers(0, 2), st.integers(0, 3)),
    st.tuples(st.just("is_even"), st.integers(0, 25)),
    st.tuples(st.just("rj_run"), st.integers(0, 6)),
    st.tuples(st.just("rt_node"), st.integers(0, 2**64 - 1), st.integers(0, 6)),
)
# The probed functions and what each returns for (arg0, arg1).
EXPECT = {
    "fib": lambda a, _b: MODELS["fib"](a)[0],
    "ackermann": lambda a, b: MODELS["ackermann"](a, b)[0],
    "is_even": lambda a, _b: int(a % 2 == 0),
    "is_odd": lambda a, _b: int(a % 2 == 1),
    "rj_dive": None,                 # never returns: every instance is unwound
    "rj_run": lambda a, _b: MODELS["rj_run"](a)[0],
    "rt_node": lambda a, b: MODELS["rt_node"](a, b)[0],
}
PROBES = st.fixed_dictionaries({
    "maxactive": st.integers(1, 20),
    "data_size": st.integers(24, 256),
    "skip_mod": st.sampled_from([0, 2, 3, 5]),       # 0: never skip
})
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _model(jobs: list[tuple]) -> tuple[list[int], Counter[str]]:
    results, calls = [], Counter[str]()
    for name, *args in jobs:
        value, counts = MODELS[name](*args)
        results.append(value)
        calls.update(counts)
    return results, calls


def _unprobed(jobs: list[tuple], seed: int, timeslice: int) -> list[int | None]:
    m = load()
    tasks = [m.spawn(name, *args) for name, *args in jobs]
    m.run_tasks(seed=seed, timeslice=timeslice)
    return [t.result for t in tasks]


def _code(m: Machine) -> bytes:
    region = m.mem.region_at(m.resolve("fib"))
    assert region is not None
    return m.read(region.start, region.end - region.start)


def _skip(mod: int) -> Callable[[int], bool] | None:
    return None if mod == 0 else (lambda arg: arg % mod == 0)


@SETTINGS
@given(jobs=st.lists(JOBS, min_size=1, max_size=8), seed=st.integers(0, 2**32 - 1),
       timeslice=st.integers(1, 2000), optimized=st.booleans(),
       probes=st.dictionaries(st.sampled_from(sorted(EXPECT)), PROBES, min_size=1))
def test_counter_identities_hold_for_any_workload(jobs: list[tuple], seed: int, timeslice: int,
                                                  optimized: bool,
                                                  probes: dict[str, dict[str, int]]) -> None:
    """Random workloads, schedules and kretprobe settings: results as unprobed,
    counter identities exact, pool whole, code restored after unregistering."""
    m = load("optimized" if optimized else "int3")
    original = _code(m)
    tracers = {name: Tracer(m, name, maxactive=p["maxactive"], data_size=p["data_size"],
                            skip=_skip(p["skip_mod"]), expect=EXPECT[name]).register()
               for name, p in probes.items()}
    tasks = [m.spawn(name, *args) for name, *args in jobs]
    m.run_tasks(seed=seed, timeslice=timeslice)
    results, calls = _model(jobs)
    assert [t.fault for t in tasks] == [None] * len(tasks)
    assert [t.result for t in tasks] == results == _unprobed(jobs, seed, timeslice)
    for name, tr in tracers.items():
        tr.check(calls[name])
    for tr in tracers.values():
        unregister_kretprobe(m, tr.rp)
    assert _code(m) == original


@SETTINGS
@given(jobs=st.lists(JOBS, min_size=1, max_size=8), seed=st.integers(0, 2**32 - 1),
       timeslice=st.integers(1, 2000), optimized=st.booleans(),
       maxactive=st.integers(1, 20),
       churn=st.lists(st.tuples(st.sampled_from(["fib", "ackermann", "is_odd", "rj_dive",
                                                 "rj_leaf", "rt_node", "tail_inner"]),
                                st.booleans(), st.integers(1, 60), st.integers(0, 60)),
                      max_size=4))
def test_probes_registered_and_unregistered_by_handlers(jobs: list[tuple], seed: int,
                                                        timeslice: int, optimized: bool,
                                                        maxactive: int,
                                                        churn: list[tuple[str, bool, int, int]]
                                                        ) -> None:
    """While the tasks run, fib's and is_even's entry handlers register other probes
    (kprobes or kretprobes, on probed functions too, making aggregates) at their
    k-th hit and unregister them some hits later. The observed kretprobes keep
    their identities and the guest computes what it computes unprobed; after
    unregistering everything, guest code is as it was."""
    m = load("optimized" if optimized else "int3")
    original = _code(m)
    hits = Counter[str]()
    extra: list[Kprobe | Kretprobe] = []
    plan: list[tuple[int, str, Kprobe | Kretprobe]] = []      # (hit number, action, probe)
    for symbol, is_ret, at, lasting in churn:
        probe: Kprobe | Kretprobe = (Kretprobe(symbol, handler=lambda ri, regs: None,
                                               maxactive=maxactive) if is_ret
                                     else Kprobe(symbol, pre_handler=lambda kp, regs: 0))
        plan += [(at, "register", probe), (at + lasting, "unregister", probe)]
        extra.append(probe)

    def act() -> None:
        hits["any"] += 1
        for at, action, probe in plan:
            if at != hits["any"]:
                continue
            if isinstance(probe, Kretprobe):
                (register_kretprobe if action == "register" else unregister_kretprobe)(m, probe)
            else:
                (register_kprobe if action == "register" else unregister_kprobe)(m, probe)

    tracers = {name: Tracer(m, name, maxactive=maxactive, expect=EXPECT[name]).register()
               for name in ("fib", "is_even", "rj_run")}
    for name in ("fib", "is_even"):
        entry = tracers[name].rp.entry_handler
        assert entry is not None

        def churning(ri: KretprobeInstance, regs: PtRegs,
                     entry: Callable[..., int | None] = entry) -> int | None:
            act()
            return entry(ri, regs)
        tracers[name].rp.entry_handler = churning
    tasks = [m.spawn(name, *args) for name, *args in jobs]
    m.run_tasks(seed=seed, timeslice=timeslice)
    results, calls = _model(jobs)
    assert [t.result for t in tasks] == results == _unprobed(jobs, seed, timeslice)
    for name, tr in tracers.items():
        tr.check(calls[name])
    for probe in extra:
        if isinstance(probe, Kretprobe):
            if probe.registered:
                assert probe.nfree == probe.maxactive
            unregister_kretprobe(m, probe)
        else:
            unregister_kprobe(m, probe)
    for tr in tracers.values():
        unregister_kretprobe(m, tr.rp)
    assert _code(m) == original


@settings(max_examples=30, deadline=None)
@given(jobs=st.lists(JOBS, min_size=1, max_size=6), seed=st.integers(0, 2**32 - 1),
       timeslice=st.integers(1, 2000), optimized=st.booleans())
def test_same_seed_replays_the_same_run(jobs: list[tuple], seed: int, timeslice: int,
                                        optimized: bool) -> None:
    """Any workload, twice with one seed: the same handler events in the same order
    (kind, function, tid, argument), the same results and counters."""
    def run() -> tuple[list[tuple[str, str, int, int]], list[int | None], list[tuple[int, int]]]:
        m = load("optimized" if optimized else "int3")
        log: list[tuple[str, str, int, int]] = []
        trs = [Tracer(m, name, maxactive=4, log=log).register()
               for name in ("fib", "ackermann", "is_odd", "rj_dive")]
        tasks = [m.spawn(name, *args) for name, *args in jobs]
        m.run_tasks(seed=seed, timeslice=timeslice)
        return log, [t.result for t in tasks], [(t.rp.nmissed, t.rp.nunwound) for t in trs]

    assert run() == run()
