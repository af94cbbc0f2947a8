"""Peak RSS of 1,000 kretprobes (maxactive 10, data_size 64) against none, each
measured in a fresh interpreter so that nothing else is counted (the
high-water mark of its own address space, ``VmHWM``)."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import sys
from emu import Machine
import guest
MANY = 1000
from probes import Kretprobe, register_kretprobe
m = Machine.from_asm(guest.source("bench") + "\\n" + guest.many_functions(MANY), max_insns=None)
if sys.argv[1] == "probes":
    for i in range(MANY):
        register_kretprobe(m, Kretprobe(f"f{i}", handler=lambda ri, regs: 0,
                                        maxactive=10, data_size=64))
for i in range(0, MANY, 97):
    m.call(f"f{i}")
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent.
print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""


def peak_rss_kib(with_probes: bool) -> int:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, "probes" if with_probes else "none"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def kretprobes_mib(reps: int = 3) -> dict[str, float]:
    """Median peak RSS with and without the probes, and the difference, in MiB."""
    none = sorted(peak_rss_kib(False) for _ in range(reps))[reps // 2]
    probes = sorted(peak_rss_kib(True) for _ in range(reps))[reps // 2]
    return {"none_mib": none / 1024, "probes_mib": probes / 1024,
            "delta_mib": (probes - none) / 1024}
