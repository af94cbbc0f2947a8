"""Kretprobes across setjmp/longjmp: the frames a longjmp skips never return.

Their instances are reclaimed without a return handler and counted in
``rp.nunwound``: when the task next enters a probed function at or above them,
returns through the trampoline above them, or ends (the kernel's
``rethook_flush_task``). The frames that do return (the setjmp caller, an
ordinary recursion around the jump) run their handlers with the right values.
Assembly: guest/regress_jump.s (its own setjmp/longjmp); C: guest/c/jump.c
(glibc's), compared with the native run.
"""

from __future__ import annotations

import errno
import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from emu import Machine
from probes import (
    Kretprobe,
    KretprobeInstance,
    ProbeError,
    PtRegs,
    register_kretprobe,
    regs_return_value,
    unregister_kretprobe,
)
from tests.guests import run_native
from tests.regress.conftest import Tracer, model_rj_run

SKIPPED = ("rj_dive", "rj_leaf", "rj_longjmp")   # frames every rj_run jumps over


def _tracers(m: Machine, maxactive: int = 64) -> dict[str, Tracer]:
    expect = {"rj_run": lambda a, _b: model_rj_run(a)[0]}
    return {name: Tracer(m, name, maxactive=maxactive, expect=expect.get(name)).register()
            for name in ("rj_run", *SKIPPED)}


def _run_task(m: Machine, func: str, *args: int) -> int:
    """Run ``func(*args)`` as a spawned task to its end (which reclaims what the
    task still holds) and return its result."""
    task = m.spawn(func, *args)
    m.run_tasks(seed=1, timeslice=50)
    assert task.fault is None and task.result is not None
    return task.result


def _run(m: Machine, how: str, func: str, *args: int) -> int:
    """``func(*args)`` by ``m.call`` or as a spawned task: either way, what the
    run left in flight is reclaimed when it ends."""
    return m.call(func, *args) if how == "call" else _run_task(m, func, *args)


@pytest.fixture(params=["call", "task"])
def how(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize(("k", "n"), [(1, 0), (1, 5), (4, 3)])
def test_skipped_frames_are_unwound_not_returned(machine: Machine, how: str, k: int,
                                                 n: int) -> None:
    """rj_loop(k, n): k longjmps from n + 3 probed frames down. rj_run's handler
    runs k times with 1 + n(n+1)/2; the skipped frames run no return handler and
    each is counted once in nunwound: rj_dive k(n + 1), rj_leaf and rj_longjmp k."""
    tr = _tracers(machine)
    value, calls = model_rj_run(n)
    assert _run(machine, how, "rj_loop", k, n) == k * value
    assert tr["rj_run"].returns == k
    for name in SKIPPED:
        assert tr[name].returns == 0
        assert tr[name].rp.nunwound == k * calls[name]
    for name, t in tr.items():
        t.check(k * calls[name])


@pytest.mark.parametrize(("maxactive", "n"), [(1, 4), (2, 4), (5, 4), (6, 4)])
def test_longjmp_deeper_than_maxactive(machine: Machine, how: str, maxactive: int,
                                       n: int) -> None:
    """Instances taken by skipped frames come back for the next run: with
    maxactive k each rj_run misses max(0, n + 1 - k) rj_dive entries and unwinds
    min(n + 1, k), the same every time (the pool does not leak across jumps)."""
    dive = Tracer(machine, "rj_dive", maxactive=maxactive).register()
    runs = 3
    assert _run(machine, how, "rj_loop", runs, n) == runs * model_rj_run(n)[0]
    assert dive.rp.nmissed == runs * max(0, n + 1 - maxactive)
    assert dive.rp.nunwound == runs * min(n + 1, maxactive)
    dive.check(runs * (n + 1))


def test_stale_instances_are_reclaimed_at_the_next_entry_above_them(machine: Machine) -> None:
    """While the task goes on, the instances of the frames the last longjmp skipped
    come back at its next probed entry at or above them (here: the next rj_run's
    first rj_dive), before that entry takes one."""
    dive = Tracer(machine, "rj_dive", maxactive=3).register()
    seen: list[tuple[int, int]] = []
    entry = dive.rp.entry_handler
    assert entry is not None

    def spy(ri: KretprobeInstance, regs: PtRegs) -> int | None:
        seen.append((dive.rp.nfree, dive.rp.nunwound))
        return entry(ri, regs)
    dive.rp.entry_handler = spy
    assert _run_task(machine, "rj_loop", 2, 4) == 2 * model_rj_run(4)[0]
    # Second run's first entry: the 3 stale instances were back (then one taken).
    assert seen == [(2, 0), (1, 0), (0, 0), (2, 3), (1, 3), (0, 3)]
    dive.check(10)


def test_stale_instances_of_an_ended_task_are_reclaimed(machine: Machine) -> None:
    """A task whose last act was a longjmp ends with instances of skipped frames
    still in flight (nothing above them returned or entered): they are reclaimed
    when the task ends and counted in nunwound."""
    dive = Tracer(machine, "rj_dive", maxactive=8).register()
    tasks = [machine.spawn("rj_run", n) for n in (2, 3, 4)]
    machine.run_tasks(seed=5, timeslice=4)
    assert [t.result for t in tasks] == [model_rj_run(n)[0] for n in (2, 3, 4)]
    assert dive.rp.nunwound == 3 + 4 + 5 - dive.rp.nmissed
    dive.check(3 + 4 + 5)


def test_a_faulting_task_gives_its_instances_back(machine: Machine) -> None:
    """A task that faults inside probed frames (rj_leaf longjmps through a NULL
    jmp_buf) ends with task.fault set; the other tasks go on, and the faulting
    task's instances are reclaimed (nunwound), not leaked."""
    dive = Tracer(machine, "rj_dive", maxactive=16).register()
    leaf = Tracer(machine, "rj_leaf", maxactive=16).register()
    good = [machine.spawn("rj_run", 3), machine.spawn("rj_run", 6)]
    bad = machine.spawn("rj_dive", 4, 0, 0, name="bad")        # buf = NULL
    machine.run_tasks(seed=2, timeslice=5)
    assert [t.result for t in good] == [model_rj_run(3)[0], model_rj_run(6)[0]]
    assert bad.fault is not None and bad.result is None
    assert machine.symbolize(bad.fault.rip).startswith("rj_longjmp")
    dive.check(4 + 7 + 5)
    leaf.check(3)
    assert dive.rp.nunwound == 4 + 7 + 5 and leaf.rp.nunwound == 3


def test_unregister_with_unwound_instances_pending(machine: Machine) -> None:
    """rj_leaf's entry handler swaps the rj_dive kretprobe for a new one while the
    old one's instances sit in frames about to be skipped: they belong to the old
    registration (never counted by the new one); the new one counts from zero,
    takes its own instances in the next run and ends whole."""
    old = Tracer(machine, "rj_dive", maxactive=4).register()
    new = Tracer(machine, "rj_dive", maxactive=4)

    def swap(ri: KretprobeInstance, regs: PtRegs) -> int:
        if old.rp.registered:
            unregister_kretprobe(machine, old.rp)
            new.register()
        return 0

    register_kretprobe(machine, Kretprobe("rj_leaf", entry_handler=swap))
    assert _run_task(machine, "rj_loop", 2, 6) == 2 * model_rj_run(6)[0]
    assert (old.entries, old.rp.nmissed, old.returns) == (4, 3, 0)
    assert (new.entries, new.rp.nmissed, new.returns, new.rp.nunwound) == (4, 3, 0, 4)
    new.check(7)


def test_call_returning_above_skipped_frames_reclaims_them(machine: Machine) -> None:
    """After m.call returns, the instances of frames it longjmp'ed over are dead
    (their stack is gone): they are reclaimed (nunwound) when the call ends, so
    the pool is whole again between calls."""
    dive = Tracer(machine, "rj_dive", maxactive=8).register()
    assert machine.call("rj_run", 3) == model_rj_run(3)[0]
    assert dive.rp.nfree == dive.rp.maxactive
    assert dive.rp.nunwound == 4


# --- the C program -------------------------------------------------------------------------
JUMP_ARGS = ["0", "3", "7", "1"]
C_SKIPPED = ("dive", "leap", "longjmp", "__longjmp")


def test_c_longjmp_matches_native_and_unwinds(guest_bin: Path) -> None:
    """guest/c/jump.c with glibc's setjmp/longjmp, probed on every function around
    the jump: output and status equal the native run; jump's handler sees the value
    it prints; walk returns normally before and after each jump; dive, leap and
    glibc's longjmp/__longjmp never return and are counted in nunwound."""
    binary = str(guest_bin / "jump.static")
    native = run_native([binary, *JUMP_ARGS])
    m = Machine.from_elf(binary, [binary, *JUMP_ARGS])
    m.stdout = io.BytesIO()
    rps: dict[str, Kretprobe] = {}
    seen: dict[str, list[int]] = {}

    def recorder(values: list[int]) -> Callable[[KretprobeInstance, PtRegs], None]:
        return lambda ri, regs: values.append(regs_return_value(regs))

    for name in ("jump", "walk", *C_SKIPPED):
        seen[name] = []
        rps[name] = Kretprobe(name, maxactive=32, handler=recorder(seen[name]))
        register_kretprobe(m, rps[name])
    status = m.run(timeout=60)
    assert (status, m.stdout.getvalue()) == native
    printed = [int(v) for v in re.findall(rb"= (-?\d+)", native[1])]
    assert seen["jump"] == printed
    ns = [int(a) for a in JUMP_ARGS]
    assert len(seen["walk"]) == sum(2 * (n + 1) for n in ns)
    expect_unwound = {"dive": sum(n + 1 for n in ns), "leap": len(ns),
                      "longjmp": len(ns), "__longjmp": len(ns)}
    for name in C_SKIPPED:
        assert seen[name] == []
        assert rps[name].nunwound == expect_unwound[name], name
    for rp in rps.values():
        assert rp.nmissed == 0
        assert rp.nfree == rp.maxactive


def test_a_kretprobe_on_setjmp_itself_is_reported(machine: Machine) -> None:
    """setjmp saves its own return address, which a kretprobe on it has replaced
    by the trampoline: the longjmp later "returns" through the trampoline into a
    frame that holds no instance. That is reported (ProbeError EFAULT from the
    call), not followed to a wrong address. (Probe the frames around setjmp, not
    setjmp: the same holds for glibc's.)"""
    Tracer(machine, "rj_setjmp").register()
    with pytest.raises(ProbeError) as err:
        machine.call("rj_run", 2)
    assert err.value.errno == errno.EFAULT
