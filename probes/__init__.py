"""Linux kprobes and kretprobes on an emulated x86-64 guest.

The kernel's design and names (kernel/kprobes.c, arch/x86/kernel/kprobes/):
a probe is an ``int3`` planted in guest memory; the trap runs the
pre_handler, single-steps the original instruction out of line (or emulates
it) and runs the post_handler. A kretprobe hijacks the return address of its
function and runs its handler when the call returns.
"""

from ._api import (
    register_kprobe,
    register_kprobes,
    register_kretprobe,
    register_kretprobes,
    unregister_kprobe,
    unregister_kprobes,
    unregister_kretprobe,
    unregister_kretprobes,
)
from ._control import (
    add_blacklist,
    arm_all,
    disable_kprobe,
    disable_kretprobe,
    disarm_all,
    enable_kprobe,
    enable_kretprobe,
    set_optimization,
)
from ._errors import ProbeError
from ._follow import probe_copies
from ._kprobe import KPROBE_FLAG_DISABLED, KPROBE_FLAG_GONE, KPROBE_FLAG_OPTIMIZED, Kprobe
from ._kretprobe import KRETPROBE_MAX_DATA_SIZE, Kretprobe, KretprobeInstance
from ._pending import pending_probes
from ._regs import PtRegs, regs_get_kernel_argument, regs_return_value
from ._report import list_probes, stack_trace

__all__ = [
    "KPROBE_FLAG_DISABLED", "KPROBE_FLAG_GONE", "KPROBE_FLAG_OPTIMIZED",
    "KRETPROBE_MAX_DATA_SIZE", "Kprobe", "Kretprobe", "KretprobeInstance", "ProbeError",
    "PtRegs", "add_blacklist", "arm_all", "disable_kprobe", "disable_kretprobe",
    "disarm_all", "enable_kprobe", "enable_kretprobe", "list_probes", "pending_probes",
    "probe_copies", "register_kprobe",
    "register_kprobes", "register_kretprobe", "register_kretprobes",
    "regs_get_kernel_argument", "regs_return_value", "set_optimization", "stack_trace",
    "unregister_kprobe", "unregister_kprobes", "unregister_kretprobe", "unregister_kretprobes",
]
