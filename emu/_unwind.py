"""A frame-pointer unwinder (System V AMD64 with ``push rbp; mov rbp, rsp``).

Frames are linked through rbp: ``[rbp]`` is the caller's rbp and
``[rbp + 8]`` the return address. At a function's first instruction (before
``push rbp``) or its second (before ``mov rbp, rsp``), rbp still belongs to
the caller, so the return address is read from the stack pointer instead, as
the kernel's unwinder does for a probe at function entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._machine import Machine

__all__ = ["unwind"]

_PUSH_RBP = b"\x55"
_MAX_FRAMES = 256


def unwind(m: Machine, rip: int, rsp: int, rbp: int) -> Iterator[tuple[int, int | None]]:
    """Yield ``(address, slot)`` innermost first: ``(rip, None)``, then each return
    address with the stack address it was read from. Stops at the outermost
    frame of :meth:`Machine.call`, at a null or non-increasing rbp, or at
    unmapped memory."""
    yield rip, None
    exit_addr = m.exit_address
    sym = m.symbols.lookup(rip)
    if sym is not None and rip in (sym.addr, sym.addr + 1):
        slot: int | None = rsp if rip == sym.addr else rsp + 8
        if rip == sym.addr + 1 and m.read(sym.addr, 1) != _PUSH_RBP:
            slot = None
        if slot is not None:
            ret = _word(m, slot)
            if ret is None or ret == exit_addr:
                return
            yield ret, slot
    fp = rbp
    for _ in range(_MAX_FRAMES):
        if not fp or fp % 8 or fp <= rsp - 8:
            return
        ret = _word(m, fp + 8)
        nxt = _word(m, fp)
        if ret is None or nxt is None or ret == exit_addr:
            return
        yield ret, fp + 8
        if nxt <= fp:
            return
        fp = nxt


def _word(m: Machine, addr: int) -> int | None:
    if m.mem.region_at(addr) is None:
        return None
    return m.mem.read_u64(addr)
