"""Every registration error carries the kernel's errno (kernel/kprobes.c)."""

from __future__ import annotations

import errno

import pytest

from emu import Machine
from probes import (
    Kprobe,
    Kretprobe,
    ProbeError,
    register_kprobe,
    register_kprobes,
    register_kretprobe,
    unregister_kprobe,
)


def code_of(exc_info: pytest.ExceptionInfo[ProbeError]) -> int:
    assert isinstance(exc_info.value, OSError)
    return exc_info.value.errno


def test_unknown_symbol_is_enoent(machine: Machine) -> None:
    with pytest.raises(ProbeError, match="nosuch") as info:
        register_kprobe(machine, Kprobe("nosuch"))
    assert code_of(info) == errno.ENOENT
    with pytest.raises(ProbeError) as info:
        register_kretprobe(machine, Kretprobe("nosuch"))
    assert code_of(info) == errno.ENOENT


@pytest.mark.parametrize("kwargs", [{}, {"symbol_name": "fib", "addr": 0x400000}])
def test_both_or_neither_of_addr_and_symbol_is_einval(machine: Machine, kwargs) -> None:
    with pytest.raises(ProbeError) as info:
        register_kprobe(machine, Kprobe(**kwargs))
    assert code_of(info) == errno.EINVAL
    with pytest.raises(ProbeError) as info:
        register_kretprobe(machine, Kretprobe(**kwargs))
    assert code_of(info) == errno.EINVAL


def test_registering_a_registered_probe_is_einval(machine: Machine) -> None:
    kp = Kprobe("fib")
    register_kprobe(machine, kp)
    with pytest.raises(ProbeError) as info:
        register_kprobe(machine, kp)
    assert code_of(info) == errno.EINVAL
    rp = Kretprobe("fib")
    register_kretprobe(machine, rp)
    with pytest.raises(ProbeError) as info:
        register_kretprobe(machine, rp)
    assert code_of(info) == errno.EINVAL


def test_kretprobe_not_at_function_entry_is_einval(machine: Machine) -> None:
    with pytest.raises(ProbeError, match="not at the entry") as info:
        register_kretprobe(machine, Kretprobe(addr=machine.symbols["fib"] + 1))
    assert code_of(info) == errno.EINVAL


def test_data_size_over_4096_is_e2big(machine: Machine) -> None:
    with pytest.raises(ProbeError) as info:
        register_kretprobe(machine, Kretprobe("fib", data_size=4097))
    assert code_of(info) == errno.E2BIG
    register_kretprobe(machine, Kretprobe("fib", data_size=4096))


def test_not_an_instruction_boundary_is_eilseq(machine: Machine) -> None:
    with pytest.raises(ProbeError, match="instruction boundary") as info:
        register_kprobe(machine, Kprobe("fib", offset=2))   # inside mov rbp, rsp
    assert code_of(info) == errno.EILSEQ


def test_address_outside_code_is_einval(machine: Machine) -> None:
    with pytest.raises(ProbeError) as info:
        register_kprobe(machine, Kprobe(addr=0x10))
    assert code_of(info) == errno.EINVAL


def test_a_failed_registration_leaves_no_trace(machine: Machine) -> None:
    """register_kprobes is all or nothing; the guest code is untouched after a failure."""
    before = machine.mem.read(machine.symbols["fib"], 1)
    good, bad = Kprobe("fib"), Kprobe("nosuch")
    with pytest.raises(ProbeError):
        register_kprobes(machine, [good, bad])
    assert not good.registered
    assert not machine.mem.is_patched(machine.symbols["fib"])
    assert machine.mem.read(machine.symbols["fib"], 1) == before
    assert machine.call("fib", 10) == 55


def test_unregistering_an_unregistered_probe_is_a_no_op(machine: Machine) -> None:
    unregister_kprobe(machine, Kprobe("fib"))


def test_error_message_is_one_line_and_names_the_input(machine: Machine) -> None:
    with pytest.raises(ProbeError) as info:
        register_kprobe(machine, Kprobe("fib", offset=2))
    text = str(info.value)
    assert "\n" not in text and "fib+0x2" in text and "EILSEQ" in text


@pytest.mark.parametrize("insn", ["int3", "int 0x80", "ud2", "into" if False else "int1"])
def test_trapping_instructions_are_refused_with_eilseq(insn: str) -> None:
    """can_probe(): an int3 already there, int n and ud2 trap by design."""
    body = {"int1": ".byte 0xf1"}.get(insn, insn)
    m = Machine.from_asm(f"f:\n    nop\n    {body}\n    ret\n")
    with pytest.raises(ProbeError, match="cannot be probed") as info:
        register_kprobe(m, Kprobe("f", offset=1))
    assert code_of(info) == errno.EILSEQ


def test_far_jump_is_eopnotsupp() -> None:
    m = Machine.from_asm("f:\n    nop\n    .byte 0xff, 0x2c, 0x24\n    ret\n")   # jmp far [rsp]
    with pytest.raises(ProbeError) as info:
        register_kprobe(m, Kprobe("f", offset=1))
    assert code_of(info) == errno.EOPNOTSUPP

