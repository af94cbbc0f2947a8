"""The native core (emu._native, issue 12): built by pip, optional, switched off
with KPE_NATIVE=0; its hook callbacks run without entering Python."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest
from unicorn import UC_HOOK_CODE

from emu import Machine, native

pytestmark = pytest.mark.skipif(not native.AVAILABLE and os.environ.get("KPE_NATIVE") == "0",
                                reason="the native core is switched off (KPE_NATIVE=0)")


def test_the_extension_is_built_here() -> None:
    """On a machine with a C compiler, pip builds the extension (make install)."""
    assert native.AVAILABLE, native.WHY_NOT
    assert set(native.ADDRESSES) >= {"noop_code", "count_code", "noop_intr"}


def test_kpe_native_0_forces_the_python_path() -> None:
    out = subprocess.run([sys.executable, "-c", "import emu.native as n; print(n.AVAILABLE, n.WHY_NOT)"],
                         env={**os.environ, "KPE_NATIVE": "0"}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False disabled by KPE_NATIVE=0"


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
