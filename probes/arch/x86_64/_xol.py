"""Out-of-line (XOL) instruction slots: ``get_insn_slot()`` / ``free_insn_slot()``.

A slot holds a copy of the probed instruction with its RIP-relative
displacement rewritten for the copy's address, followed either by ``int3``
(single-step: the trap tells the core the instruction ran) or by ``jmp rel32``
back to the next original instruction (a *boosted* probe: no second trap).
Both forms live in one slot, so a probe can switch between them when a
post_handler comes or goes. Slot pages are mapped within +-2 GiB of the code
they serve, so every rel32 fix-up fits; they are named ``[kprobe_insn_slots]``
and are on the blacklist.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

from capstone import CsInsn
from capstone import x86_const as X

from emu import PAGE, Machine
from emu._memory import PROT_RX

from ..._errors import ProbeError

__all__ = ["XolArea", "Slot", "SLOT_SIZE"]

SLOT_SIZE = 64
_HALF = SLOT_SIZE // 2          # step copy at +0, boost copy at +32
_REACH = (1 << 31) - 2 * PAGE


@dataclass(eq=False)
class Slot:
    addr: int
    step_addr: int        # copy followed by int3
    step_trap: int        # address of that int3
    boost_addr: int       # copy followed by jmp back


def _rel32(value: int, what: str) -> bytes:
    if not -(1 << 31) <= value < (1 << 31):
        raise ProbeError(errno.ENOSPC, f"{what} does not fit in 32 bits")
    return struct.pack("<i", value)


def _copy_for(insn: CsInsn, at: int) -> bytes:
    """The instruction's bytes with any RIP-relative displacement re-based to ``at``."""
    code = bytearray(insn.bytes)
    if any(op.type == X.X86_OP_MEM and op.mem.base == X.X86_REG_RIP for op in insn.operands):
        off = insn.disp_offset
        old = struct.unpack_from("<i", code, off)[0]
        code[off:off + 4] = _rel32(old + insn.address - at, "RIP-relative displacement")
    return bytes(code)


class XolArea:
    """The slot pages of one machine."""

    def __init__(self, m: Machine) -> None:
        self._m = m
        self._pages: list[int] = []
        self._free: list[int] = []
        self._garbage: list[int] = []   # freed, maybe still about to run: see collect()
        self._origin: dict[int, int] = {}  # slot -> address of the instruction it copies

    def pages(self) -> list[tuple[int, int]]:
        return [(p, p + PAGE) for p in self._pages]

    def _alloc(self, near: int) -> int:
        for i, addr in enumerate(self._free):
            if abs(addr - near) < _REACH:
                return self._free.pop(i)
        region = self._m.mem.map_anywhere(PAGE, PROT_RX, "[kprobe_insn_slots]",
                                          near=near, reach=_REACH)
        self._pages.append(region.start)
        self._free.extend(range(region.start + SLOT_SIZE, region.end, SLOT_SIZE))
        return region.start

    def get_slot(self, insn: CsInsn) -> Slot:
        base = self._alloc(insn.address)
        step, boost = base, base + _HALF
        nxt = insn.address + insn.size
        step_code = _copy_for(insn, step) + b"\xcc"
        boost_copy = _copy_for(insn, boost)
        jmp_from = boost + len(boost_copy) + 5
        boost_code = boost_copy + b"\xe9" + _rel32(nxt - jmp_from, "jump back from the slot")
        self._m.mem.write(step, step_code.ljust(_HALF, b"\xcc"))
        self._m.mem.write(boost, boost_code.ljust(_HALF, b"\xcc"))
        self._origin[base] = insn.address
        return Slot(base, step, step + insn.size, boost)

    def original_of(self, addr: int) -> int | None:
        """The probed instruction whose copy starts at ``addr`` (either copy of a
        slot), or None: where a fault in a slot really happened."""
        base = addr - addr % SLOT_SIZE
        origin = self._origin.get(base)
        if origin is None or addr - base not in (0, _HALF):
            return None
        return origin

    def free_slot(self, slot: Slot) -> None:
        """Retire a slot. A boosted copy may still be the guest's next instruction,
        so the bytes stay until :meth:`collect` runs with the guest stopped."""
        self._garbage.append(slot.addr)

    def collect(self) -> None:
        """Make retired slots reusable; call only while no guest code runs. A slot
        where a stopped task will resume (an aborted run) stays as it is."""
        parked = {rip - rip % SLOT_SIZE for rip in self._m.parked_rips()}
        keep = [addr for addr in self._garbage if addr in parked]
        for addr in self._garbage:
            if addr in parked:
                continue
            self._m.mem.write(addr, b"\xcc" * SLOT_SIZE)
            self._origin.pop(addr, None)
            self._free.append(addr)
        self._garbage = keep
