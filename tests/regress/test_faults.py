"""One task faults while probes are live; the other tasks go on probed.

Rules pinned: a faulting task ends with ``task.fault`` and its kretprobe instances
are reclaimed (``nunwound``); nothing of the probe machinery stays "in progress"
on the CPU it shared: the other tasks' probe hits still run their handlers
(``kprobe_running()`` is per hit, not left set by a dead task) and they are still
preempted (``preempt_count`` is not left raised). A fault in an instruction that
was being single-stepped out of line is reported at the probed instruction, as
``kprobe_fault_handler`` (arch/x86/kernel/kprobes/core.c) resets the IP to
``kp.addr``, not at its copy in the slot page.
"""

from __future__ import annotations

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu import GuestFault, Machine
from probes import Kprobe, register_kprobe
from tests.regress.conftest import Tracer, fib, load, model_fib, shared_memory


def _load_in_rj_longjmp(m: Machine) -> int:
    """The address of rj_longjmp's first load through the jmp_buf (``mov rbx, [rdi]``),
    which faults for a NULL buffer and runs out of line when probed."""
    base = m.resolve("rj_longjmp")
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    return next(addr for addr, _size, mnemonic, ops in md.disasm_lite(m.read(base, 64), base)
                if mnemonic == "mov" and ops == "rbx, qword ptr [rdi]")


def _stepped_probe(m: Machine, posts: list[int]) -> int:
    """A kprobe with a post_handler (so a real out-of-line single-step) on that load."""
    addr = _load_in_rj_longjmp(m)
    register_kprobe(m, Kprobe(addr=addr, pre_handler=lambda kp, regs: 0,
                              post_handler=lambda kp, regs, flags: posts.append(1)))
    return addr


@pytest.mark.parametrize("mode", ["int3", "optimized"])
def test_a_fault_in_a_boosted_instruction_spares_the_others(mode: str) -> None:
    """The faulting instruction runs boosted (no post_handler): the task ends with
    its fault, its instances come back, the other tasks' handlers all run."""
    m = load(mode)
    register_kprobe(m, Kprobe(addr=_load_in_rj_longjmp(m), pre_handler=lambda kp, regs: 0))
    tr = Tracer(m, "fib", maxactive=100, expect=lambda a, _b: fib(a)).register()
    dive = Tracer(m, "rj_dive", maxactive=100).register()
    bad = m.spawn("rj_dive", 3, 0, 0, name="bad")
    good = [m.spawn("fib", 11) for _ in range(3)]
    m.run_tasks(seed=4, timeslice=20)
    assert isinstance(bad.fault, GuestFault) and bad.fault.reason == "unmapped"
    assert [t.result for t in good] == [fib(11)] * 3
    tr.check(3 * model_fib(11)[1]["fib"])
    assert tr.rp.kp.nmissed == 0
    dive.check(4)
    assert dive.rp.nunwound == 4


@pytest.mark.parametrize("mode", ["int3", "optimized"])
def test_a_fault_in_a_single_step_spares_the_others_handlers(mode: str) -> None:
    """Same with a post_handler on the faulting instruction (a real single-step):
    the other tasks' kretprobe handlers still all run."""
    m = load(mode)
    posts: list[int] = []
    _stepped_probe(m, posts)
    tr = Tracer(m, "fib", maxactive=100, expect=lambda a, _b: fib(a)).register()
    bad = m.spawn("rj_dive", 2, 0, 0, name="bad")
    good = [m.spawn("fib", 12) for _ in range(3)]
    m.run_tasks(seed=0, timeslice=20)
    assert bad.fault is not None and posts == []
    assert [t.result for t in good] == [fib(12)] * 3
    assert tr.rp.kp.nmissed == 0
    tr.check(3 * model_fib(12)[1]["fib"])


def test_a_fault_in_a_single_step_keeps_the_others_preemptible() -> None:
    """Two tasks compute, then meet at a spin barrier, while a third faults in a
    single-stepped instruction: the barrier must still be passed, which needs the
    scheduler to go on switching between the two."""
    m = load()
    _stepped_probe(m, [])
    count = shared_memory(m)
    m.spawn("rj_dive", 0, 0, 0, name="bad")
    good = [m.spawn("rs_fib_barrier", count, 2, 12, name=f"good{i}") for i in range(2)]
    m.run_tasks(seed=1, timeslice=3, max_insns=300_000)
    assert [t.result for t in good] == [fib(12)] * 2


def test_a_fault_in_a_single_step_names_the_probed_instruction() -> None:
    m = load()
    addr = _stepped_probe(m, [])
    bad = m.spawn("rj_dive", 0, 0, 0, name="bad")
    m.run_tasks(seed=0)
    assert bad.fault is not None
    assert bad.fault.rip == addr
    assert m.symbolize(addr) in str(bad.fault)
