"""The x86-64 side of kprobes: the arch contract used by the generic core.

Kernel names (arch/x86/kernel/kprobes/core.c):
- :meth:`X86_64.prepare` = ``arch_prepare_kprobe``: boundary check, refusals,
  then an emulate op or an out-of-line slot;
- :meth:`X86_64.arm` / :meth:`X86_64.disarm` = ``arch_arm_kprobe`` /
  ``arch_disarm_kprobe``: plant / remove the ``0xCC``;
- :meth:`X86_64.remove` = ``arch_remove_kprobe``: free the slot;
- :attr:`X86_64.trampoline` = the kretprobe return trampoline.
"""

from __future__ import annotations

from dataclasses import dataclass

from emu import Machine

from ._decode import check_boundary, decode
from ._emulate import EmulateOp, build_emulate_op
from ._trampoline import Trampoline
from ._xol import Slot, XolArea

__all__ = ["ArchInsn", "X86_64"]

INT3 = 0xCC


@dataclass(eq=False)
class ArchInsn:
    """``struct arch_specific_insn``: how one probed instruction is stepped."""

    addr: int
    size: int
    text: str
    emulate: EmulateOp | None
    slot: Slot | None

    @property
    def boostable(self) -> bool:
        """Out-of-line copies jump back by themselves when nothing needs a post trap."""
        return self.slot is not None


class X86_64:
    """Per-machine arch state: the slot area and the return trampoline."""

    def __init__(self, m: Machine) -> None:
        self._m = m
        self.xol = XolArea(m)
        self.trampoline = Trampoline(m)
        m.rip_fixups.append(self.xol.original_of)

    def prepare(self, addr: int) -> ArchInsn:
        check_boundary(self._m, addr)
        insn = decode(self._m, addr)
        op = build_emulate_op(self._m, insn)
        slot = None if op is not None else self.xol.get_slot(insn)
        text = f"{insn.mnemonic} {insn.op_str}".strip()
        return ArchInsn(addr, insn.size, text, op, slot)

    def arm(self, addr: int) -> None:
        self._m.mem.patch_byte(addr, INT3)

    def disarm(self, addr: int) -> None:
        self._m.mem.unpatch_byte(addr)

    def remove(self, ainsn: ArchInsn) -> None:
        if ainsn.slot is not None:
            self.xol.free_slot(ainsn.slot)
            ainsn.slot = None

    def blacklist(self) -> list[tuple[int, int]]:
        """Ranges no probe may target: the trampoline and the slot pages."""
        return [self.trampoline.span, *self.xol.pages()]
