"""Views over registered probes: ``list_probes`` (debugfs ``kprobes/list``) and
``stack_trace`` (``stack_trace_save_regs`` with ``kretprobe_find_ret_addr``)."""

from __future__ import annotations

from emu import Machine

from ._core import get_manager
from ._kprobe import KPROBE_FLAG_DISABLED
from ._regs import PtRegs

__all__ = ["list_probes", "stack_trace"]


def list_probes(m: Machine) -> str:
    """One line a probe, like /sys/kernel/debug/kprobes/list::

        0000000000400000  r  fib+0x0  [OPTIMIZED]  nmissed=0 nunwound=2
        0000000000400004  k  fib+0x4  [DISABLED]

    ``k`` a kprobe, ``r`` a kretprobe's entry probe; each child of an aggregate
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
            where = f"{sym.name}+{addr - sym.addr:#x}" if sym else f"{addr:#x}"
            flags = []
            if kp.flags & KPROBE_FLAG_DISABLED:
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
    return "\n".join(lines) + ("\n" if lines else "")


def stack_trace(m: Machine, regs: PtRegs) -> list[int]:
    """Return addresses innermost first, starting with ``regs.rip``, by frame pointer.

    A return address that is the kretprobe trampoline (a hijacked frame) is
    replaced by the real one from the task's in-flight instances, so nested
    kretprobes on caller and callee still give the true call chain.
    """
    mgr = get_manager(m)
    real = {ri.fp: ri.ret_addr for ri in mgr.rethook.inflight.get(m.current_task, ())}
    tramp = mgr.trampoline
    trace = []
    for addr, slot in m.unwind(regs.rip, regs.rsp, regs.rbp):
        if addr == tramp and slot is not None:
            addr = real.get(slot, addr)
            if addr == m.exit_address:      # the hijacked outermost frame
                break
        trace.append(addr)
    return trace
