"""The kernel's kretprobe example, on the bundled ``open_file`` guest.

A port of samples/kprobes/kretprobe_example.c in the form it took in the
review of the entry-handler patch (2008): the entry_handler stamps a monotonic
time into the instance's private data, the return handler prints the duration
of each *failed* call, and unloading reports how many calls were missed.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import guest
from emu import Machine
from probes import (
    Kretprobe,
    KretprobeInstance,
    PtRegs,
    register_kretprobe,
    regs_return_value,
    stack_trace,
    unregister_kretprobe,
)

__all__ = ["run_demo"]

_STAMP = struct.Struct("<q")      # struct my_data { ktime_t entry_stamp; }


def run_demo(func_name: str = "open_file", calls: int = 100, maxactive: int = 20,
             out: Callable[[str], None] = print, stacktrace: bool = False) -> Kretprobe:
    m: Machine = guest.load("open_file")

    def entry_handler(ri: KretprobeInstance, regs: PtRegs) -> int:
        _STAMP.pack_into(ri.data, 0, time.monotonic_ns())
        return 0

    def return_handler(ri: KretprobeInstance, regs: PtRegs) -> int:
        retval = regs_return_value(regs)
        if retval < 0:
            delta = time.monotonic_ns() - _STAMP.unpack_from(ri.data, 0)[0]
            out(f"{func_name}: return val = {retval} (duration = {delta} ns)")
            if stacktrace:
                for addr in stack_trace(m, regs):
                    out(f"    {m.symbolize(addr)}")
        return 0

    rp = Kretprobe(symbol_name=func_name, handler=return_handler,
                   entry_handler=entry_handler, data_size=_STAMP.size, maxactive=maxactive)
    register_kretprobe(m, rp)
    out(f"Planted return probe at {func_name}: {rp.kp.addr:#x}")

    failed = m.call("open_loop", calls)

    unregister_kretprobe(m, rp)
    out(f"kretprobe at {rp.kp.addr:#x} unregistered ({failed} of {calls} calls failed)")
    # nmissed > 0 suggests that maxactive was set too low.
    out(f"Missed probing {rp.nmissed} instances of {func_name}")
    return rp
