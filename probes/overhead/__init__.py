"""What probes cost on a workload: ``measure`` and its report.

``measure(make_machine, attach)`` times a workload unprobed and probed in paired,
interleaved samples, with a no-op probe of the same kind (the mechanism) and a
raw ctypes code hook (the floor) in the same run, and reports per probe the
per-hit cost, its split into mechanism and handler, the ratio to the floor and
the whole-run slowdown, each with its spread. ``kprobe-emu overhead`` is its
command line.
"""

from ._chart import draw_chart
from ._floor import floor_callback, install_floor
from ._measure import BEST_OF, MIN_HITS, OverheadReport, ProbeResult, Sample, measure
from ._points import ProbePoint
from ._stats import Spread, bootstrap_ci, spread

__all__ = [
    "BEST_OF", "MIN_HITS", "OverheadReport", "ProbePoint", "ProbeResult", "Sample", "Spread",
    "bootstrap_ci", "draw_chart", "floor_callback", "install_floor", "measure", "spread",
]
