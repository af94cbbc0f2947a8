"""Views over registered probes: ``list_probes`` (debugfs ``kprobes/list``) and
``stack_trace`` (``stack_trace_save_regs`` with ``kretprobe_find_ret_addr``)."""

from __future__ import annotations

from emu import Machine
from emu._unwind import follows_call, unwind

from ._core import KprobeManager, get_manager
from ._kprobe import KPROBE_FLAG_DISABLED, KPROBE_FLAG_GONE
from ._kretprobe import Kretprobe
from ._pending import pending_probes, probe_target
from ._regs import PtRegs

__all__ = ["list_probes", "stack_trace"]


def list_probes(m: Machine) -> str:
    """One line a probe, like /sys/kernel/debug/kprobes/list::

        0000000000400000  r  fib+0x0  [OPTIMIZED]  nmissed=0 nunwound=2
        0000000000400004  k  fib+0x4  [DISABLED]
        00007f0000001000  k  libfoo.so:bar+0x0  [GONE]
        0000000000000000  r  libc:malloc  [PENDING]

    ``k`` a kprobe, ``r`` a kretprobe's entry probe; ``[GONE]`` a probe whose code
    was unmapped (``KPROBE_FLAG_GONE``); ``[PENDING]`` one waiting for its
    object to be mapped (no address yet, its target as given; after the armed
    ones, in registration order); C++ names are demangled; each child of an aggregate
    (several probes on one address) has its own line, in registration order. A
    kretprobe's line ends with its counters (the kernel shows them in
    ``kprobe_profile``; ``nunwound`` is ours, see :class:`Kretprobe`).
    """
    mgr = get_manager(m)
    lines = []
    for addr in sorted(mgr.sites):
        site = mgr.sites[addr]
        for kp in site.probes:
            kind = "r" if kp._kretprobe is not None else "k"
            sym = m.symbols.lookup(addr)
            where = f"{sym.demangled}+{addr - sym.addr:#x}" if sym else f"{addr:#x}"
            flags = []
            if kp.flags & KPROBE_FLAG_GONE:      # report_probe(): [GONE] hides [DISABLED]
                flags.append("[GONE]")
            elif kp.flags & KPROBE_FLAG_DISABLED:
                flags.append("[DISABLED]")
            if site.mode == "optimized":
                flags.append("[OPTIMIZED]")
            line = f"{addr:016x}  {kind}  {where}"
            if flags:
                line += f"  {' '.join(flags)}"
            rp = kp._kretprobe
            if rp is not None:
                line += f"  nmissed={rp.nmissed} nunwound={rp.nunwound}"
            lines.append(line)
    for probe, _reason in pending_probes(m):
        kind = "r" if isinstance(probe, Kretprobe) else "k"
        lines.append(f"{0:016x}  {kind}  {probe_target(probe)}  [PENDING]")
    return "\n".join(lines) + ("\n" if lines else "")


def stack_trace(m: Machine, regs: PtRegs, *, at_entry: bool | None = None) -> list[int]:
    """Return addresses innermost first, starting with ``regs.rip``.

    Unwinds by the ``.eh_frame`` CFI of the object holding each frame's code,
    by frame pointer where there is none (assembled code); see
    :func:`emu._unwind.unwind`. A return address that is the kretprobe
    trampoline (a hijacked frame) is replaced by the real one from the task's
    in-flight instances (``kretprobe_find_ret_addr``), and the walk goes on in
    the real caller, so nested kretprobes on caller and callee still give the
    true call chain.

    ``at_entry`` says whether ``regs`` are those of a probe hit at a function's
    entry, which matters only for frame-pointer frames (the return address is
    then at ``rsp``, rbp is still the caller's). ``None``: inferred. A return
    handler never is (``regs.rip`` is the return site, perhaps labelled); nor is
    a probe on an address that follows a call instruction. Any other probe may
    be, and the unwinder checks that ``regs.rip`` is a symbol's first or second
    instruction.
    """
    mgr = get_manager(m)
    if at_entry is None:
        at_entry = not _in_return_handler(m, mgr) and not follows_call(m, regs.rip)
    real = {ri.fp: ri.ret_addr for ri in mgr.rethook.inflight.get(m.current_task, ())}
    tramp = mgr.trampoline

    def recover(addr: int, slot: int) -> int:
        return real.get(slot, addr) if addr == tramp else addr

    return [addr for addr, _slot in unwind(m, regs.rip, regs.rsp, regs.rbp, at_entry=at_entry,
                                           recover_ret_addr=recover)]


def _in_return_handler(m: Machine, mgr: KprobeManager) -> bool:
    """Return handlers run from the code hook on the trampoline's first
    instruction (:mod:`probes._rethook`): the live pc is there."""
    return m.cpu.read("rip") == mgr.trampoline
