"""The x86-64 back end: slots, boosting, RIP-relative fix-ups (arch/x86/kernel/kprobes/core.c)."""

from __future__ import annotations

from capstone import CS_ARCH_X86, CS_MODE_64, Cs

import guest
from probes import Kprobe, register_kprobe
from probes._core import get_manager


def test_slot_holds_a_fixed_up_copy_then_int3_and_a_boosted_copy_then_jmp_back() -> None:
    m = guest.load("kunit")
    addr = m.symbols["rip_relative"]              # mov rax, qword ptr [rip + rip_data]
    register_kprobe(m, Kprobe(addr=addr))
    ainsn = get_manager(m).sites[addr].ainsn
    slot = ainsn.slot
    assert ainsn.emulate is None and ainsn.boostable
    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    cs.detail = True
    step = list(cs.disasm(m.read(slot.step_addr, ainsn.size + 1), slot.step_addr))
    boost = list(cs.disasm(m.read(slot.boost_addr, ainsn.size + 5), slot.boost_addr))
    data = m.symbols["rip_data"]
    # Both copies still address rip_data from where they sit.
    for copy in (step[0], boost[0]):
        assert copy.disp + copy.address + copy.size == data
    assert step[1].mnemonic == "int3" and slot.step_trap == step[1].address
    assert boost[1].mnemonic == "jmp" and boost[1].operands[0].imm == addr + ainsn.size


def test_push_pop_nop_and_branches_are_emulated_not_slotted() -> None:
    m = guest.load("fib")
    mgr = get_manager(m)
    for off in (0, 4):                            # push rbp, push rbx
        register_kprobe(m, Kprobe("fib", offset=off))
        site = mgr.sites[m.symbols["fib"] + off]
        assert site.ainsn.emulate is not None and site.ainsn.slot is None
