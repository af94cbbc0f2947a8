"""The x86-64 side of kprobes: the arch contract used by the generic core.

Kernel names (arch/x86/kernel/kprobes/core.c):
- :meth:`X86_64.prepare` = ``arch_prepare_kprobe``: boundary check, refusals,
  then an emulate op or an out-of-line slot;
- :meth:`X86_64.arm` / :meth:`X86_64.disarm` = ``arch_arm_kprobe`` /
  ``arch_disarm_kprobe``: plant / remove the ``0xCC``;
- :meth:`X86_64.remove` = ``arch_remove_kprobe``: free the slot;
- :meth:`X86_64.disarm` also copes with code that was unmapped under the probe
  (``kill_kprobe``: nothing is written where there is no memory any more);
- :attr:`X86_64.trampoline` = the kretprobe return trampoline;
- :meth:`X86_64.sit_unwinder`: the guest's unwinder (C++ exceptions,
  ``backtrace()``) sees real return addresses where kretprobes hijacked them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from emu import Machine

from ._decode import check_boundary, decode, decode_bytes
from ._emulate import EmulateOp, build_emulate_op
from ._trampoline import Trampoline
from ._unwinder import UnwinderSitter
from ._xol import Slot, XolArea

__all__ = ["ArchInsn", "X86_64"]

INT3 = 0xCC


@dataclass(eq=False, slots=True)
class ArchInsn:
    """``struct arch_specific_insn``: how one probed instruction is stepped."""

    addr: int
    size: int
    text: str
    emulate: EmulateOp | None
    slot: Slot | None
    # An emulated instruction's out-of-line copy, made the first time an access
    # of it must fault (see probes.arch.x86_64._emulate): the real one faults there.
    real: Slot | None = None

    @property
    def boostable(self) -> bool:
        """Out-of-line copies jump back by themselves when nothing needs a post trap."""
        return self.slot is not None

    def faults_out_of_line(self, nxt: int) -> bool:
        """The emulate op returned ``nxt`` = its real copy: it did nothing and the
        instruction is about to fault as the CPU's does (no post_handler then)."""
        return self.real is not None and nxt == self.real.boost_addr


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
        text = f"{insn.mnemonic} {insn.op_str}".strip()
        ainsn = ArchInsn(addr, insn.size, text, None, None)
        # The emulate op must not keep the decoded instruction alive (about 2 KiB with
        # its details, per probe): the real copy, rarely needed, decodes the bytes again.
        code = bytes(insn.bytes)
        ainsn.emulate = build_emulate_op(self._m, insn, lambda: self._real_copy(ainsn, code))
        if ainsn.emulate is None:
            ainsn.slot = self.xol.get_slot(insn)
        return ainsn

    def _real_copy(self, ainsn: ArchInsn, code: bytes) -> int:
        """Where an emulated instruction runs for real (to fault as the CPU does)."""
        if ainsn.real is None:
            ainsn.real = self.xol.get_slot(decode_bytes(code, ainsn.addr))
        return ainsn.real.boost_addr

    def arm(self, addr: int) -> None:
        self._m.mem.patch_byte(addr, INT3)

    def disarm(self, addr: int) -> None:
        """Put the original byte back; code unmapped meanwhile took its patch with it."""
        if self._m.mem.is_patched(addr):
            self._m.mem.unpatch_byte(addr)

    def remove(self, ainsn: ArchInsn) -> None:
        for slot in (ainsn.slot, ainsn.real):
            if slot is not None:
                self.xol.free_slot(slot)
        ainsn.slot = ainsn.real = None

    def sit_unwinder(self, find_ret_addr: Callable[[int], int | None]) -> None:
        """Translate the trampoline for the guest's unwinder; ``find_ret_addr(slot)``
        is the real return address hijacked at stack address ``slot``, or None."""
        self.unwinder = UnwinderSitter(self._m, self.trampoline.addr, find_ret_addr)

    def blacklist(self) -> list[tuple[int, int]]:
        """Ranges no probe may target: the trampoline and the slot pages."""
        return [self.trampoline.span, *self.xol.pages()]
