"""The native core (emu._native, issue 12): built by pip, optional, switched off
with KPE_NATIVE=0; its hook callbacks run without entering Python."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest
from unicorn import UC_HOOK_CODE

from emu import GuestFault, Machine, native

switched_off = pytest.mark.skipif(os.environ.get("KPE_NATIVE") == "0",
                                  reason="the native core is switched off (KPE_NATIVE=0)")


@switched_off
def test_the_extension_is_built_here() -> None:
    """On a machine with a C compiler, pip builds the extension (make install)."""
    assert native.AVAILABLE, native.WHY_NOT
    assert set(native.ADDRESSES) >= {"noop_code", "count_code", "noop_intr"}


def test_kpe_native_0_forces_the_python_path() -> None:
    out = subprocess.run([sys.executable, "-c", "import emu.native as n; print(n.AVAILABLE, n.WHY_NOT)"],
                         env={**os.environ, "KPE_NATIVE": "0"}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False disabled by KPE_NATIVE=0"


@switched_off
def test_a_native_counting_hook_counts_every_hit_without_python() -> None:
    """count_code on one instruction of a loop: the count is the loop's trip count."""
    m = Machine.from_asm("""
f:
    xor eax, eax
again:
    add rax, 1
    cmp rax, rdi
    jne again
    ret
""", max_insns=None)
    counter = ctypes.c_uint64(0)
    addr = m.symbols["again"]
    m._hooks.add_native(UC_HOOK_CODE, native.ADDRESSES["count_code"], ctypes.addressof(counter), addr, addr)
    m.mem.invalidate_code(addr, addr + 1)
    assert m.call("f", 12345) == 12345
    assert counter.value == 12345


def _trap_machine() -> Machine:
    return Machine.from_asm("""
f:
    int3
    mov eax, 7
    ret
g:
    nop
    mov eax, 9
    ret
""")


def test_the_interrupt_dispatch_calls_traps_and_carries_their_exceptions() -> None:
    """The machine's int3 dispatch (native when built, on_intr with KPE_NATIVE=0):
    a trap of the table gets the address; what it raises ends the call; an int3
    nobody takes is a fault naming it."""
    m = _trap_machine()
    seen: list[int] = []
    f = m.symbols["f"]
    m.traps[f] = seen.append
    assert m.call("f") == 7 and seen == [f]

    def boom(addr: int) -> None:
        raise ValueError(f"trap at {addr:#x}")

    m.traps[f] = boom
    with pytest.raises(ValueError, match=f"trap at {f:#x}"):
        m.call("f")
    del m.traps[f]
    with pytest.raises(GuestFault, match=r"int3 at f\+0x0 .* with no handler"):
        m.call("f")


def test_a_fast_raw_code_hook_gets_the_address() -> None:
    """hook_code(raw=True, fast=True): fn(uch or None, addr, size, key or None)
    before the instruction, on both paths."""
    m = _trap_machine()
    g = m.symbols["g"]
    seen: list[tuple[int, int]] = []
    handle = m.hook_code(g, lambda _u, addr, size, _k: seen.append((addr, size)), raw=True, fast=True)
    assert m.call("g") == 9 and seen == [(g, 1)]
    m.unhook(handle)
    assert m.call("g") == 9 and seen == [(g, 1)]


@switched_off
def test_a_native_raw_code_hook_carries_what_it_raises() -> None:
    """A raw hook must catch its own exceptions (ctypes drops them); the native
    dispatch hands them to Machine.abort anyway, so the call raises."""
    m = _trap_machine()

    def boom(_u: object, addr: int, _size: int, _k: object) -> None:
        raise KeyError(addr)

    m.hook_code(m.symbols["g"], boom, raw=True, fast=True)
    with pytest.raises(KeyError):
        m.call("g")


def test_the_clock_is_unbounded_and_its_native_copy_saturates() -> None:
    """A guest may sleep 2**63 s (make fuzz found nanosleep overflowing the int64
    cell): Machine.clock stays a Python int; what native code reads saturates at
    the kernel's KTIME_MAX."""
    from emu._machine import KTIME_MAX

    m = Machine.from_asm("f: ret")
    m.clock = 5
    m.clock += 2**63 * 10**9
    assert m.clock == 5 + 2**63 * 10**9
    assert m._clock.value == KTIME_MAX
    m.clock = -3
    assert m.clock == -3 and m._clock.value == 0
