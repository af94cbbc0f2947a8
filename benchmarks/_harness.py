"""Timing: per-hit overhead = (time with the probe - time without) / hits.

Every sample builds fresh machines, translates the workload once (a warm-up
call), then times the workload without and with the probe, back to back, each
the best of three calls.
Repetitions of all cases are interleaved and the median of the pairs is taken,
so that ratios computed within one run are stable on a noisy machine.
The garbage collector is paused while a call is timed. Every timed call checks
the guest's result.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from emu import Machine

Setup = Callable[[Machine], object]


@dataclass
class Workload:
    """A guest call: ``make()`` builds the machine, ``run(m)`` makes the timed call(s)
    and checks the result, ``hits`` is how many probe hits one run makes."""

    name: str
    make: Callable[[], Machine]
    run: Callable[[Machine], None]
    hits: int


@dataclass
class Case:
    """A probe set-up on a workload. Each sample times the workload on a fresh
    bare machine and then on a fresh probed one, back to back, so that drift of
    a noisy host cancels in the pair's difference."""

    name: str
    workload: Workload
    setup: Setup
    group: str = "probe"
    pairs: list[tuple[float, float]] = field(default_factory=list)   # (bare, probed) s

    def sample(self) -> None:
        bare = timed(self.workload, self.workload.make())
        m = self.workload.make()
        self.setup(m)
        self.pairs.append((bare, timed(self.workload, m)))

    @property
    def per_hit_us(self) -> float:
        """Median over the pairs of (probed - bare) / hits, in microseconds."""
        return statistics.median(p - b for b, p in self.pairs) / self.workload.hits * 1e6

    @property
    def speed_ratio(self) -> float:
        """Median over the pairs of bare time / probed time (1.0: no slowdown)."""
        return statistics.median(b / p for b, p in self.pairs)


BEST_OF = 3


def timed(workload: Workload, m: Machine) -> float:
    """The best of BEST_OF timed calls after a warm-up call (which translates the
    code): bursts of the host, not the probe, make the slower ones slower."""
    workload.run(m)
    gc.disable()
    try:
        best = float("inf")
        for _ in range(BEST_OF):
            start = time.perf_counter()
            workload.run(m)
            best = min(best, time.perf_counter() - start)
        return best
    finally:
        gc.enable()
