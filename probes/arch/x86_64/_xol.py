"""Out-of-line (XOL) instruction slots: ``get_insn_slot()`` / ``free_insn_slot()``.

A slot holds a copy of the probed instruction with its RIP-relative
displacement rewritten for the copy's address, followed either by ``int3``
(single-step: the trap tells the core the instruction ran) or by ``jmp rel32``
back to the next original instruction (a *boosted* probe: no second trap).
Both forms live in one slot, so a probe can switch between them when a
post_handler comes or goes. An instruction that leaves its own address in a
register (``syscall``: rcx = the next instruction) is followed in both copies by
a fix-up that puts the original's value there, so the guest never sees the slot.
Slot pages are mapped within +-2 GiB of the code they serve, so every rel32
fix-up fits; they are named ``[kprobe_insn_slots]`` and are on the blacklist.
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


def _movabs_rcx(value: int) -> bytes:
    return b"\x48\xb9" + struct.pack("<Q", value)


# Instruction -> code run right after its copy, given the original's next address:
# registers the CPU sets from where the instruction sits.
_AFTER_COPY = {
    X.X86_INS_SYSCALL: _movabs_rcx,       # rcx = return address (entry_SYSCALL_64)
}


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
        self._origin: dict[int, tuple[int, int]] = {}  # slot -> (address, size) it copies

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
        after = _AFTER_COPY[insn.id](nxt) if insn.id in _AFTER_COPY else b""
        step_copy = _copy_for(insn, step) + after
        boost_copy = _copy_for(insn, boost) + after
        jmp_from = boost + len(boost_copy) + 5
        boost_code = boost_copy + b"\xe9" + _rel32(nxt - jmp_from, "jump back from the slot")
        self._m.mem.write(step, (step_copy + b"\xcc").ljust(_HALF, b"\xcc"))
        self._m.mem.write(boost, boost_code.ljust(_HALF, b"\xcc"))
        self._origin[base] = (insn.address, insn.size)
        return Slot(base, step, step + len(step_copy), boost)

    def original_of(self, addr: int) -> int | None:
        """Where the guest really is when it is at ``addr`` in a slot, or None
        outside slots: at a copy, the probed instruction (a fault there is the
        original's); past it (the fix-up, the jump back, the step trap), the
        instruction after the original, which has run."""
        base = addr - addr % SLOT_SIZE
        origin = self._origin.get(base)
        if origin is None:
            return None
        insn_addr, size = origin
        return insn_addr if (addr - base) % _HALF == 0 else insn_addr + size

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
