"""emu.Machine: assembly, symbols, calls, memory, faults."""

from __future__ import annotations

import pytest

import guest
from emu import AsmError, EmuError, GuestFault, Machine, SymbolNotFound


def test_labels_become_symbols_that_extend_to_the_next_symbol() -> None:
    m = Machine.from_asm("""
first:
    nop
.local:
    nop
second:
    ret
""", base=0x500000)
    assert dict(m.symbols) == {"first": 0x500000, "second": 0x500002}
    assert m.symbols.get_symbol("first").size == 2
    assert m.symbolize(0x500001) == "first+0x1"
    assert m.symbolize(0x500002) == "second+0x0"


def test_local_labels_are_scoped_to_their_symbol() -> None:
    """Two functions may both use .done (NASM-style scoping)."""
    m = Machine.from_asm("""
a:
    jmp .done
.done:
    mov eax, 1
    ret
b:
    jmp .done
.done:
    mov eax, 2
    ret
""")
    assert (m.call("a"), m.call("b")) == (1, 2)


def test_call_passes_six_arguments_and_returns_signed_rax() -> None:
    m = Machine.from_asm("""
f:
    lea rax, [rdi + rsi]
    add rax, rdx
    add rax, rcx
    add rax, r8
    sub rax, r9
    ret
""")
    assert m.call("f", 1, 2, 3, 4, 5, 20) == -5
    assert m.call(m.symbols["f"], -1, 0, 0, 0, 0, 0) == -1
    with pytest.raises(EmuError, match="at most 6"):
        m.call("f", *range(7))


def test_unknown_symbol() -> None:
    m = guest.load("fib")
    with pytest.raises(SymbolNotFound, match="nosuch"):
        m.call("nosuch")


def test_bad_assembly_is_an_asm_error() -> None:
    with pytest.raises(AsmError, match="cannot assemble"):
        Machine.from_asm("f:\n    mov rax, rbx, rcx\n")


def test_stack_is_aligned_at_entry_per_the_abi() -> None:
    """System V: (rsp + 8) is a multiple of 16 at function entry."""
    m = Machine.from_asm("f:\n    mov rax, rsp\n    ret\n")
    assert (m.call("f") + 8) % 16 == 0


def test_read_write_round_trip() -> None:
    m = Machine.from_asm("f:\n    mov rax, qword ptr [rip + d]\n    ret\nd:\n    .quad 7\n")
    assert m.call("f") == 7
    m.write(m.symbols["d"], (99).to_bytes(8, "little"))
    assert m.read(m.symbols["d"], 8) == (99).to_bytes(8, "little")
    assert m.call("f") == 99


def test_writing_code_drops_the_translation_cache() -> None:
    m = Machine.from_asm("f:\n    mov eax, 1\n    ret\n")
    assert m.call("f") == 1
    m.write(m.symbols["f"] + 1, (2).to_bytes(4, "little"))
    assert m.call("f") == 2


@pytest.mark.parametrize("body, reason, text", [
    ("mov rax, [0x10]", "unmapped", "read from unmapped memory at 0x10 (rip=0x400002 bad+0x2)"),
    ("mov qword ptr [0x20], rax", "unmapped", "write to unmapped memory at 0x20 (rip=0x400002 bad+0x2)"),
    ("jmp rax", "unmapped", "instruction fetch from unmapped memory at 0x0"),
    (".byte 0x0f, 0x0b", "invalid-instruction", "invalid instruction (rip=0x400002 bad+0x2)"),
    ("int3", "trap", "int3 at bad+0x2 (0x400002) with no handler"),
])
def test_guest_faults_name_the_address_and_symbol(body: str, reason: str, text: str) -> None:
    m = Machine.from_asm(f"bad:\n    xor eax, eax\n    {body}\n    ret\n")
    with pytest.raises(GuestFault) as info:
        m.call("bad")
    assert info.value.reason == reason
    assert text in str(info.value)
    assert "\n" not in str(info.value)


def test_runaway_guest_hits_the_instruction_budget() -> None:
    m = Machine.from_asm("spin:\n    jmp spin\n", max_insns=10_000)
    with pytest.raises(GuestFault, match="instruction budget of 10000") as info:
        m.call("spin")
    assert info.value.reason == "insn-budget"
    assert "spin+0x0" in str(info.value)


def test_runaway_guest_hits_the_timeout() -> None:
    m = Machine.from_asm("spin:\n    jmp spin\n", max_insns=None, timeout=0.05)
    with pytest.raises(GuestFault, match="timeout") as info:
        m.call("spin")
    assert info.value.reason == "timeout"


def test_current_task_has_a_positive_tid() -> None:
    m = guest.load("fib")
    assert m.current_task.tid > 0


def test_the_fast_register_block_matches_the_api() -> None:
    m = guest.load("fib")
    assert m.cpu.is_fast
    m.cpu.gpr[3] = 0x1122334455667788
    assert m.cpu.read("rbx") == 0x1122334455667788
    m.cpu.write("r15", 5)
    assert m.cpu.gpr[15] == 5


def test_fpu_starts_as_after_fninit() -> None:
    """A Linux task starts with the x87 control word 0x37f and MXCSR 0x1f80
    (Unicorn's zeros unmask every exception and change rounding)."""
    m = Machine.from_asm("""
fcw:
    fnstcw word ptr [rsp - 8]
    movzx eax, word ptr [rsp - 8]
    ret
mxcsr:
    stmxcsr dword ptr [rsp - 8]
    mov eax, dword ptr [rsp - 8]
    ret
""")
    assert (m.call("fcw"), m.call("mxcsr")) == (0x37F, 0x1F80)


def test_new_task_has_its_own_stack_and_tid() -> None:
    """call() runs on the current task's stack."""
    m = Machine.from_asm("sp:\n    mov rax, rsp\n    ret\n")
    main = m.current_task
    other = m.new_task()
    assert other.tid != main.tid and other.tid > 0
    assert main.stack.start <= m.call("sp") < main.stack.end
    m.current_task = other
    assert other.stack.start <= m.call("sp") < other.stack.end
    assert other.stack.start != main.stack.start
