"""The probe hit paths in C (probes/_native.c, issue 12).

The C paths implement the Python core's contract: every test of tests/probes
and tests/regress runs on both (make test runs them again with KPE_NATIVE=0).
These tests pin what is particular to the C side, and run on both paths where
the behaviour is the contract's.
"""

from __future__ import annotations

import os

import pytest

from emu import PAGE, GuestFault, Machine
from emu._memory import PROT_R
from probes import Kprobe, Kretprobe, register_kprobe, register_kretprobe, set_optimization
from probes._cnative import NATIVE
from probes._core import get_manager
from tests.probes.test_actions import SOURCE

native_only = pytest.mark.skipif(NATIVE is None, reason="the native core is not in use "
                                 f"(KPE_NATIVE={os.environ.get('KPE_NATIVE', 'unset')})")


@pytest.fixture
def m() -> Machine:
    return Machine.from_asm(SOURCE)


@native_only
@pytest.mark.parametrize("optimized", [False, True])
def test_sites_get_native_hit_paths(m: Machine, optimized: bool) -> None:
    set_optimization(m, optimized)
    register_kprobe(m, Kprobe("leaf", pre_handler=lambda kp, regs: 0))
    mgr = get_manager(m)
    site = mgr.sites[m.symbols["leaf"]]
    m.call("leaf", 1)              # an int3 site builds its hit path at its first hit
    assert isinstance(site.handler, NATIVE.Hit)
    assert type(mgr).__name__ == "_NativeManager"
    assert isinstance(mgr.regs, NATIVE.Regs)
    assert f"{m.symbols['leaf']:#x}" in repr(site.handler)


@native_only
def test_a_site_with_a_post_handler_keeps_the_python_single_step(m: Machine) -> None:
    register_kprobe(m, Kprobe("leaf", pre_handler=lambda kp, regs: 0,
                              post_handler=lambda kp, regs, flags: None))
    m.call("leaf", 1)
    assert not isinstance(get_manager(m).sites[m.symbols["leaf"]].handler, NATIVE.Hit)


@pytest.mark.parametrize("optimized", [False, True])
def test_handlers_read_and_write_registers_through_the_same_contract(m: Machine,
                                                                     optimized: bool) -> None:
    set_optimization(m, optimized)
    seen = {}

    def pre(kp: Kprobe, regs) -> int:  # type: ignore[no-untyped-def]
        seen.update(rdi=regs.rdi, rsp=regs.rsp, rip=regs.rip, eflags=regs.eflags,
                    got=regs._get(7))
        regs.rdi = -1                  # masked to 64 bits, applied when the handler returns
        seen["buffered"] = regs.rdi
        return 0

    register_kprobe(m, Kprobe("leaf", pre_handler=pre))
    assert m.call("leaf", 41) == 0     # rdi + 1 with rdi = 2**64 - 1
    assert seen["rdi"] == seen["got"] == 41
    assert seen["rip"] == m.symbols["leaf"]
    assert seen["buffered"] == 2**64 - 1
    assert seen["eflags"] & 0x2        # the always-one bit


@pytest.mark.parametrize("optimized", [False, True])
def test_a_handler_that_raises_leaves_the_registers_untouched(m: Machine, optimized: bool) -> None:
    set_optimization(m, optimized)

    def pre(kp: Kprobe, regs) -> int:  # type: ignore[no-untyped-def]
        regs.rdi = 99
        raise RuntimeError("boom")

    register_kprobe(m, Kprobe("leaf", pre_handler=pre))
    with pytest.raises(RuntimeError, match="boom"):
        m.call("leaf", 1)
    set_optimization(m, False)
    get_manager(m).sites[m.symbols["leaf"]].probes[0].pre_handler = None
    assert m.call("leaf", 5) == 6


@native_only
def test_the_c_regs_refuse_what_the_contract_does_not_have(m: Machine) -> None:
    regs = get_manager(m).regs
    with pytest.raises(IndexError):
        regs._get(17)
    with pytest.raises(IndexError):
        regs._set(-2, 0)
    with pytest.raises(AttributeError):
        del regs.rax
    regs._set(16, 0x1234)
    assert regs._commit() == 0x1234 and regs._dirty is None


def test_the_emulated_push_faults_as_the_cpu_once_a_handler_makes_the_stack_read_only(
        m: Machine) -> None:
    """The C push writes through a cached host pointer: a handler's mprotect must
    make it fall back to the Python op, which faults at the probed push as the
    CPU does (the same on both paths)."""
    def pre(kp: Kprobe, regs) -> int:  # type: ignore[no-untyped-def]
        page = (regs.rsp - 8) & ~(PAGE - 1)
        m.mem.protect(page, page + PAGE, PROT_R)
        return 0

    kp = Kprobe("leaf", pre_handler=lambda kp, regs: 0)
    register_kprobe(m, kp)
    assert m.call("leaf", 1) == 2      # the stack span is cached now
    kp.pre_handler = pre
    with pytest.raises(GuestFault) as info:
        m.call("leaf", 1)
    assert (info.value.rip, info.value.reason) == (m.symbols["leaf"], "protection")


def test_kretprobes_on_several_task_stacks_each_get_their_own_returns() -> None:
    m = Machine.from_asm(SOURCE)
    seen: list[int] = []
    register_kretprobe(m, Kretprobe("leaf", handler=lambda ri, regs: seen.append(regs.rax)))
    tasks = [m.spawn("loop", n) for n in (50, 60, 70)]
    m.run_tasks(seed=3)
    assert [t.result for t in tasks] == [2, 2, 2]
    assert sorted(seen) == sorted([n + 1 for k in (50, 60, 70) for n in range(1, k + 1)])


def test_a_handler_less_kretprobe_counts_what_it_misses(m: Machine) -> None:
    set_optimization(m, True)
    rp = Kretprobe("leaf", maxactive=1)
    register_kretprobe(m, rp)
    assert m.call("loop", 100) == 2
    assert (rp.nmissed, rp.nunwound, rp.nfree) == (0, 0, 1)
    assert m.mem.read_u64(m.cpu.gpr[4]) != get_manager(m).trampoline


def test_writable_spans_come_from_the_memory_map(m: Machine) -> None:
    mgr = get_manager(m)
    sp = m.current_task.stack.end - 64
    span = mgr._rw_span(sp - 8)
    assert span is not None and span[0] <= sp - 8 < span[1] and span[2]
    assert mgr._rw_span(mgr.trampoline) is None       # read and execute only
    assert mgr._rw_span(0) is None                    # unmapped


STEPS = """
pop_ret:
    push rbx
    mov rbx, rdi
    lea rax, [rbx + 1]
at_pop:
    pop rbx
    ret
callee:
    lea rax, [rdi + 100]
at_ret:
    ret
caller:
at_call:
    call callee
at_jmp:
    jmp caller_tail
    ud2
caller_tail:
    add rax, 1
    ret
popped:
at_ret16:
    ret 16
drop:
    xor eax, eax
    push 7
    push 8
    call popped
    ret
"""
STEP_SITES = {"at_pop": b"\x5b", "at_ret": b"\xc3", "at_call": b"\xe8", "at_jmp": b"\xeb",
              "at_ret16": b"\xc2"}


@pytest.mark.parametrize("handler", [False, True], ids=["handler-less", "handler"])
def test_pop_jmp_call_and_ret_are_stepped_in_c(handler: bool) -> None:
    """pop reg, jmp rel, call rel, ret and ret imm16 at a probe give what the
    unprobed run gives; with the native core they are stepped in C (their kind),
    with or without the GIL."""
    bare = Machine.from_asm(STEPS)
    want = [bare.call("pop_ret", 5), bare.call("caller", 1), bare.call("drop")]
    m = Machine.from_asm(STEPS)
    hits: list[int] = []
    for label, opcode in STEP_SITES.items():
        assert m.read(m.symbols[label], 1) == opcode
        register_kprobe(m, Kprobe(addr=m.symbols[label],
                                  pre_handler=(lambda kp, regs: hits.append(kp.addr) or 0)
                                  if handler else None))
    assert [m.call("pop_ret", 5), m.call("caller", 1), m.call("drop")] == want == [6, 102, 0]
    assert len(hits) == (5 if handler else 0)
    if NATIVE is not None:
        from probes._core import _STEP_CALL, _STEP_JMP, _STEP_POP, _STEP_RET
        mgr = get_manager(m)
        kinds = [mgr._step_of(mgr.sites[m.symbols[label]].ainsn, False)[0] for label in STEP_SITES]
        assert kinds == [_STEP_POP, _STEP_RET, _STEP_CALL, _STEP_JMP, _STEP_RET]


def test_an_emulated_ret_faults_as_the_cpu_once_a_handler_unmaps_the_stack_word() -> None:
    """The C ret reads through a cached host pointer: a handler that makes the
    stack unreadable sends it to the Python op, which faults at the ret."""
    m = Machine.from_asm(STEPS)
    ret_at = m.symbols["at_ret"]

    def pre(kp: Kprobe, regs) -> int:  # type: ignore[no-untyped-def]
        page = regs.rsp & ~(PAGE - 1)
        m.mem.protect(page, page + PAGE, 0)
        return 0

    kp = Kprobe(addr=ret_at, pre_handler=lambda kp, regs: 0)
    register_kprobe(m, kp)
    assert m.call("callee", 1) == 101        # the stack span is cached now
    kp.pre_handler = pre
    with pytest.raises(GuestFault) as info:
        m.call("callee", 1)
    assert info.value.rip == ret_at
