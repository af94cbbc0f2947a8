"""The kretprobe return trampoline (``arch_rethook_trampoline`` analogue).

Layout of the trampoline page::

    T+0:  jmp qword ptr [rip + cell] ; resume at the real return address
    T+64: cell (8 bytes)

A code hook on T (installed by the core) runs the return handlers before the
``jmp`` and writes the real return address (``ri.ret_addr``) into the cell, so
the guest resumes by itself: no RIP write, no stack write below rsp, no trap.
The cell is consumed by the very next instruction of the same task. (A code
hook costs 0.1 us less than an ``int3`` trap here; both work.)
"""

from __future__ import annotations

import mmap
import struct

from emu import PAGE, Machine
from emu._memory import PROT_RX

__all__ = ["Trampoline"]

_CELL_OFFSET = 64


class Trampoline:
    def __init__(self, m: Machine) -> None:
        region = m.mem.map_anywhere(PAGE, PROT_RX, "[kretprobe_trampoline]")
        self.addr = region.start
        self.cell = region.start + _CELL_OFFSET
        jmp_len = 6                          # ff 25 disp32
        disp = self.cell - (self.addr + jmp_len)
        code = b"\xff\x25" + struct.pack("<i", disp)
        m.mem.write(self.addr, code.ljust(_CELL_OFFSET, b"\xcc"))
        m.symbols.add("__kretprobe_trampoline", self.addr, jmp_len)
        self.region = region
        self._buf = region.buf

    def cell_buffer(self) -> tuple[mmap.mmap | memoryview, int]:
        """(host buffer, offset) of the cell, for writers on the hot path."""
        return self._buf, _CELL_OFFSET

    def set_return(self, addr: int) -> None:
        struct.pack_into("<Q", self._buf, _CELL_OFFSET, addr)

    @property
    def span(self) -> tuple[int, int]:
        return (self.region.start, self.region.end)

