"""The targets of the performance issue, and the kernel's published figures.

Kernel figures: Documentation/trace/kprobes.rst, "Probe Overhead" (x86-64,
Intel Xeon E5410 2.33 GHz: k = unoptimized kprobe, b = boosted, o = optimized,
r = kretprobe, rb = boosted kretprobe, ro = optimized kretprobe; kr = kprobe +
kretprobe on one function, AMD Opteron 246 1994 MHz).
"""

from __future__ import annotations

from dataclasses import dataclass

KERNEL_US: dict[str, tuple[str, float]] = {
    "kprobe, int3, emulated push (entry)": ("b", 0.43),
    "kprobe, int3, boosted": ("b", 0.43),
    "kprobe, optimized": ("o", 0.06),
    "kprobe with post_handler (single-step)": ("k", 0.99),
    "kretprobe, int3, no-op handlers": ("rb", 0.68),
    "kretprobe, optimized, no-op handlers": ("ro", 0.35),
    "kprobe + kretprobe on one function": ("kr", 0.82),
}


@dataclass(frozen=True)
class Target:
    """``metric`` (a key of the results' ``ratios``) must be <= or >= ``bound``."""

    label: str
    metric: str
    op: str          # "<=" or ">=" or "<"
    bound: float

    def met(self, value: float) -> bool:
        return {"<=": value <= self.bound, ">=": value >= self.bound,
                "<": value < self.bound}[self.op]


TARGETS: tuple[Target, ...] = (
    Target("kprobe, optimized (x floor)", "kprobe, optimized", "<=", 1.5),
    Target("kprobe, int3 boosted (x floor)", "kprobe, int3, boosted", "<=", 4.0),
    Target("kretprobe, optimized, no-op (x floor)", "kretprobe, optimized, no-op handlers", "<=", 4.0),
    Target("kretprobe, int3, no-op (x floor)", "kretprobe, int3, no-op handlers", "<=", 8.0),
    Target("naive / kretprobe per hit", "naive / kretprobe", ">=", 3.0),
    Target("unprobed speed, 1,000 probes elsewhere / none", "speed with 1000 elsewhere", ">=", 0.95),
    Target("per hit, 1,000 probes / 1 probe", "1000 probes / 1 probe", "<=", 1.2),
    Target("per hit, depth 1,000 / depth 1", "depth 1000 / depth 1", "<=", 1.2),
    Target("kretprobe per hit, 8 tasks running / 1 task", "8 tasks / 1 task", "<=", 1.2),
    Target("memory of 1,000 kretprobes (MiB over none)", "memory MiB", "<", 4.0),
    Target("unprobed run, default settings / raw Unicorn", "default settings / raw Unicorn", "<=", 1.05),
)


# Issue 12 (the native core): the same cases against the raw ctypes floor. make
# bench reports them; benchmarks.check enforces TARGETS only until the native
# core lands.
NATIVE_TARGETS: tuple[Target, ...] = (
    Target("kprobe optimized, no-op pre_handler (x raw floor)", "kprobe, optimized (x raw)", "<=", 1.3),
    Target("kprobe int3 at a function entry (x raw floor)", "kprobe, int3, emulated push (entry) (x raw)",
           "<=", 2.0),
    Target("kretprobe optimized, no-op handler (x raw floor)",
           "kretprobe, optimized, no-op handlers (x raw)", "<=", 2.5),
    Target("kretprobe int3, no-op handler (x raw floor)", "kretprobe, int3, no-op handlers (x raw)",
           "<=", 3.0),
    Target("kretprobe with entry_handler and handler (x raw floor)",
           "kretprobe + entry_handler, data_size=8 (demo) (x raw)", "<=", 3.5),
    Target("memory of 1,000 kretprobes, maxactive 10 (MiB)", "memory MiB", "<=", 2.0),
    Target("kprobe with no handlers, optimized (x raw floor)", "kprobe, optimized, no handlers (x raw)",
           "<=", 0.5),
    Target("kretprobe with no handlers, optimized (x raw floor)", "kretprobe, optimized, no handlers (x raw)",
           "<=", 0.5),
    Target("per hit, 10,000 optimized probes / 1 (optimized)", "10000 optimized probes / 1", "<=", 1.1),
    Target("funccount on 1 M hits, whole run / unprobed", "funccount / unprobed", "<=", 1.5),
    Target("funclatency on 1 M hits, whole run / unprobed", "funclatency / unprobed", "<=", 1.5),
)
