"""Why a run stopped: the guest faults, budget and timeout stops and ``hlt`` of
:class:`emu.Machine` (a mixin: the attributes are the Machine's own), reported as
one :class:`GuestFault` each, at the probed instruction when the stop was in a
client's relocated copy (``m.rip_fixups``, the kernel's ``kprobe_fault_handler``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from unicorn import UcError
from unicorn import unicorn_const as _uc

from ._engine import UNLIMITED
from ._errors import GuestFault
from ._regtable import RIP

if TYPE_CHECKING:
    from ._cpu import Cpu
    from ._engine import Engine
    from ._memory import Memory

__all__ = ["StopsMixin", "canonical", "FAULT_KIND"]

FAULT_KIND = {
    _uc.UC_ERR_READ_UNMAPPED: ("unmapped", "read from unmapped memory"),
    _uc.UC_ERR_WRITE_UNMAPPED: ("unmapped", "write to unmapped memory"),
    _uc.UC_ERR_FETCH_UNMAPPED: ("unmapped", "instruction fetch from unmapped memory"),
    _uc.UC_ERR_READ_PROT: ("protection", "read from protected memory"),
    _uc.UC_ERR_WRITE_PROT: ("protection", "write to protected memory"),
    _uc.UC_ERR_FETCH_PROT: ("protection", "instruction fetch from non-executable memory"),
    _uc.UC_ERR_INSN_INVALID: ("invalid-instruction", "invalid instruction"),
    _uc.UC_ERR_READ_UNALIGNED: ("unmapped", "unaligned read"),
    _uc.UC_ERR_WRITE_UNALIGNED: ("unmapped", "unaligned write"),
    _uc.UC_ERR_EXCEPTION: ("exception", "unhandled CPU exception"),
}


def canonical(addr: int) -> bool:
    """Bits 47..63 all equal: an address an x86-64 CPU can translate (else #GP)."""
    return (addr >> 47) in (0, 0x1FFFF)



class StopsMixin:
    """``_fault_of``, ``_stop_of``, ``original_rip``, ``_stopped_on_hlt``."""

    if TYPE_CHECKING:
        cpu: Cpu
        mem: Memory
        engine: Engine
        timeout: float | None
        rip_fixups: list[Callable[[int], int | None]]
        last_fault: tuple[int | None, int | None]
        _fault: tuple[str, str] | None
        _fault_addr: int | None
        _fault_intno: int | None
        _fault_rip: int | None

        def symbolize(self, addr: int) -> str: ...

    def _fault_of(self, error: UcError | None) -> GuestFault | None:
        """The fault the last ``emu_start`` ended with (an engine error or a trap).

        An access to a non-canonical address is the CPU's general protection
        fault (#GP, SIGSEGV), reported as ``"protection"``; where a hook stopped
        on a faulting instruction (``sysenter``) RIP is put back on it.
        """
        if self._fault_rip is not None:
            self.cpu.gpr[RIP], self._fault_rip = self._fault_rip, None
        rip = self.original_rip(self.cpu.gpr[RIP])
        intno, self._fault_intno = self._fault_intno, None
        self.last_fault = (self._fault_addr, intno)
        if error is not None:
            kind, what = FAULT_KIND.get(error.errno, ("exception", str(error)))
            bad, self._fault_addr = self._fault_addr, None
            at = ""
            if bad is not None and kind != "invalid-instruction":
                at = f" at {bad:#x}"
                if not canonical(bad):
                    kind, what, at = "protection", "general protection fault", \
                        f" (non-canonical address {bad:#x})"
            return GuestFault(f"guest fault: {what}{at} (rip={rip:#x} {self.symbolize(rip)})",
                              rip=rip, reason=kind)
        if self._fault is not None:
            (kind, what), self._fault = self._fault, None
            return GuestFault(f"guest fault: {what}", rip=rip, reason=kind)
        return None

    def original_rip(self, rip: int) -> int:
        """``rip``, or the instruction it is a relocated copy of (:attr:`rip_fixups`)."""
        for fixup in self.rip_fixups:
            original = fixup(rip)
            if original is not None:
                return original
        return rip

    def _stopped_on_hlt(self, rip: int) -> bool:
        return bool(self.mem.region_at(rip - 1)) and self.mem.read(rip - 1, 1) == b"\xf4"

    def _stop_of(self, rip: int, count: int, retired: int) -> GuestFault:
        """Why a run with no fault stopped short: its budget (the exact retired
        count: the last instruction may well end in a byte 0xf4), its timeout
        (Unicorn's flag), else a ``hlt`` (Unicorn stops after it)."""
        exact = self.engine.has_counter
        at = self.original_rip(rip)        # a stop in a probe's out-of-line copy: its original
        if count and count != UNLIMITED and (retired >= count if exact else not self._stopped_on_hlt(rip)):
            return GuestFault(f"guest ran away: instruction budget of {count} exhausted at "
                              f"{self.symbolize(at)} ({at:#x})", rip=at, reason="insn-budget")
        if self.timeout and self.engine.timed_out():
            return GuestFault(f"guest ran away: timeout of {self.timeout} s reached at "
                              f"{self.symbolize(at)} ({at:#x})", rip=at, reason="timeout")
        if self._stopped_on_hlt(rip):
            return GuestFault(f"guest fault: hlt at {self.symbolize(rip - 1)} ({rip - 1:#x})",
                              rip=rip - 1, reason="exception")
        return GuestFault(f"guest stopped for no known reason at {self.symbolize(rip)} ({rip:#x})",
                          rip=rip, reason="exception")
