"""``struct pt_regs`` for handlers: a lazy, write-buffered view of the CPU.

Reads go straight to the live register block (no copy is made on a hit a
handler never looks at). Writes are buffered and applied by the core when the
handler returns normally, so a handler that raises leaves the guest untouched.
``rip`` is whatever the core presents (the probe address in a pre_handler, the
real return address in a return handler), not the emulator's internal value.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

from emu import Machine, native
from emu._regtable import (
    ARG_REGS,
    FAST_INDEX,
    MASK64,
    RIP,
    RSP,
    UC_ID,
    to_signed64,
)

from ._cnative import NATIVE, for_machine

__all__ = ["PtRegs", "regs_return_value", "regs_get_kernel_argument", "regs_for"]

_EFLAGS = -1


class PtRegs:
    """Registers at a probe hit: ``rax rbx rcx rdx rsi rdi rbp rsp r8..r15 rip eflags``."""

    __slots__ = ("_gpr", "_cpu", "_mem", "_rip", "_dirty", "machine")

    if TYPE_CHECKING:        # the properties are generated below, one per register
        rax: int
        rbx: int
        rcx: int
        rdx: int
        rsi: int
        rdi: int
        rbp: int
        rsp: int
        r8: int
        r9: int
        r10: int
        r11: int
        r12: int
        r13: int
        r14: int
        r15: int
        rip: int
        eflags: int

    def __init__(self, gpr: Any, cpu: Any, mem: Any) -> None:
        self._gpr = gpr
        self._cpu = cpu
        self._mem = mem
        self.machine: Any = None    # the Machine these registers are of (set by the manager)
        self._rip = 0
        self._dirty: dict[int, int] | None = None

    def _reset(self, rip: int) -> None:
        self._rip = rip
        self._dirty = None

    def _get(self, index: int) -> int:
        dirty = self._dirty
        if dirty is not None and index in dirty:
            return dirty[index]
        if index == RIP:
            return self._rip
        if index == _EFLAGS:
            return self._cpu.eflags
        return self._gpr[index]

    def _set(self, index: int, value: int) -> None:
        if self._dirty is None:
            self._dirty = {}
        self._dirty[index] = value & MASK64

    def _commit(self) -> int:
        """Apply buffered writes other than RIP; return the RIP to resume at."""
        dirty = self._dirty
        if dirty is None:
            return self._rip
        self._dirty = None
        gpr = self._gpr
        for index, value in dirty.items():
            if index == RIP:
                self._rip = value
            elif index == _EFLAGS:
                self._cpu.eflags = value
            else:
                gpr[index] = value
        return self._rip

    def _discard(self) -> None:
        self._dirty = None

    def stack_word(self, n: int) -> int:
        """The n-th 8-byte word above ``rsp`` (``regs_get_kernel_stack_nth``)."""
        return self._mem.read_u64(self._get(RSP) + 8 * n)

    def __repr__(self) -> str:
        inner = " ".join(f"{n}={getattr(self, n):#x}" for n in _NAMES)
        return f"<PtRegs {inner}>"


def regs_for(m: Machine) -> Any:
    """The pt_regs object of ``m``'s probe manager: :class:`PtRegs`, or the same
    contract in C over the same live block when the native core is used."""
    if _NativeRegs is not None and for_machine(m) is not None:
        return _NativeRegs(m.cpu.gpr, m.cpu, m.mem)
    return PtRegs(m.cpu.gpr, m.cpu, m.mem)


def _reg_property(index: int, name: str) -> property:
    def fget(self: PtRegs) -> int:
        return self._get(index)

    def fset(self: PtRegs, value: int) -> None:
        self._set(index, value)

    return property(fget, fset, doc=f"guest {name}")


_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
          "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "eflags")
for _name in _NAMES:
    setattr(PtRegs, _name, _reg_property(FAST_INDEX.get(_name, _EFLAGS), _name))


def regs_return_value(regs: PtRegs) -> int:
    """RAX as a signed 64-bit value (include/asm-generic/ptrace.h)."""
    return to_signed64(regs._get(FAST_INDEX["rax"]))


def regs_get_kernel_argument(regs: PtRegs, n: int) -> int:
    """The n-th (0-based) integer argument at function entry, System V order.

    Like arch/x86/include/asm/ptrace.h: arguments 0-5 come from rdi, rsi, rdx,
    rcx, r8, r9; argument n >= 6 from the stack, word ``n - 5`` above rsp (word
    0 is the return address). The value is unsigned, as the kernel's.
    """
    if n < 0:
        raise ValueError(f"argument index must be >= 0, got {n}")
    if n < len(ARG_REGS):
        return regs._get(ARG_REGS[n])
    return regs.stack_word(n - len(ARG_REGS) + 1)


def _native_regs() -> Any:
    if NATIVE is None:
        return None

    class NativeRegs(NATIVE.Regs):
        """:class:`PtRegs` in C (probes/_native.c): the same attributes and methods."""

        __slots__ = ("_gpr", "_cpu", "_mem", "machine")

        def __init__(self, gpr: Any, cpu: Any, mem: Any) -> None:
            super().__init__(ctypes.addressof(gpr), cpu._handle.value,
                             native.function_address("uc_reg_read"),
                             native.function_address("uc_reg_write"), UC_ID["eflags"])
            self._gpr = gpr
            self._cpu = cpu
            self._mem = mem
            self.machine: Any = None

        stack_word = PtRegs.stack_word
        __repr__ = PtRegs.__repr__

    return NativeRegs


_NativeRegs = _native_regs()
