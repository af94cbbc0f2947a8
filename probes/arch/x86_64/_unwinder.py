"""The guest's own unwinder sees real return addresses, not the kretprobe trampoline.

A kretprobe replaces a return address on the stack by the trampoline. The
guest's unwinder (libgcc's ``_Unwind_RaiseException``, ``_Unwind_Resume``,
``_Unwind_ForcedUnwind``, ``_Unwind_Backtrace``: C++ exceptions, thread
cancellation, ``backtrace()``) reads that address to find the caller's frame
description, finds none for the trampoline and stops: a C++ exception thrown
through a kretprobed frame ends in ``std::terminate``. Linux uretprobes have
this problem; Frida solved it on Apple platforms ("UnwindSitter", frida-core
PR 515) by translating trampoline addresses where the unwinder reads them.

This does the same for libgcc's DWARF unwinder (unwind-dw2.c): every walk asks
``_Unwind_Find_FDE(context->ra - 1, &context->bases)`` for the frame description
of the next frame, so a code hook on its entry sees the return address the
unwinder holds and, from the second argument, the ``struct _Unwind_Context``
it came from. When that return address is the trampoline, the hijacked slot is
at ``context->cfa - 8`` (x86-64: the CFA is the stack pointer before the call);
the hook writes the real return address (``kretprobe_find_ret_addr``) into
``context->ra`` and the first argument, so the unwinder, the personality
routine (``_Unwind_GetIP``) and ``backtrace()`` see the real caller. Frames the
exception unwinds past keep their instances until the task next enters or
returns above them (``rp.nunwound``), as after a ``longjmp``.

Limits: libgcc's context layout of x86-64 (17 DWARF registers; unchanged for
years) is assumed, and checked (the hook acts only if ``context->ra`` is the
trampoline); LLVM's libunwind is not handled.
"""

from __future__ import annotations

from collections.abc import Callable

from emu import Machine, MappedObject
from emu._memory import PROT_RW
from emu._regtable import RDI, RSI

__all__ = ["UnwinderSitter"]

# struct _Unwind_Context (libgcc unwind-dw2.c) on x86-64: reg[18], cfa, ra, lsda,
# bases; offsets from &context->bases, the second argument of _Unwind_Find_FDE.
_CFA_FROM_BASES = -24
_RA_FROM_BASES = -16
_FIND_FDE = "_Unwind_Find_FDE"

FindRetAddr = Callable[[int], "int | None"]


class UnwinderSitter:
    """Hooks ``_Unwind_Find_FDE`` of every object that has one, as they are mapped."""

    def __init__(self, m: Machine, trampoline: int, find_ret_addr: FindRetAddr) -> None:
        self._m = m
        self._tramp = trampoline
        self._find = find_ret_addr
        self._hooked: set[int] = set()
        for obj in m.objects:
            self._on_mapped(obj)
        m.on_object_mapped.append(self._on_mapped)

    def _on_mapped(self, obj: MappedObject) -> None:
        sym = self._m.symbols.get_symbol(obj.symbol_name(_FIND_FDE))
        if sym is not None and sym.addr not in self._hooked:
            self._hooked.add(sym.addr)
            self._m.hook_code(sym.addr, self._on_find_fde)

    def _readable(self, addr: int) -> bool:
        region = self._m.mem.region_at(addr)
        return region is not None and region.perms & PROT_RW == PROT_RW and addr + 8 <= region.end

    def _on_find_fde(self, _addr: int) -> None:
        gpr, mem = self._m.cpu.gpr, self._m.mem
        pc, bases = gpr[RDI], gpr[RSI]
        offset = pc - (self._tramp - 1)      # 0, or 1 in a signal frame's context
        if offset not in (0, 1):
            return
        ra_at, cfa_at = bases + _RA_FROM_BASES, bases + _CFA_FROM_BASES
        if not (self._readable(ra_at) and self._readable(cfa_at)):
            return
        if mem.read_u64(ra_at) != self._tramp:
            return                           # not called from a libgcc context
        real = self._find(mem.read_u64(cfa_at) - 8)
        if real is None:
            return
        mem.write_u64(ra_at, real)
        gpr[RDI] = real - 1 + offset
