"""Timing: per-hit overhead = (time with the probe - time without) / hits.

Every case builds fresh machines, translates the workload once (a warm-up call),
then times one call. Repetitions of all cases are interleaved, and medians are
taken, so that ratios computed within one run are stable on a noisy machine.
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
    name: str
    workload: Workload
    setup: Setup
    group: str = "probe"
    samples: list[float] = field(default_factory=list)

    def sample(self) -> None:
        m = self.workload.make()
        self.setup(m)
        self.samples.append(timed(self.workload, m))

    @property
    def seconds(self) -> float:
        return statistics.median(self.samples)


def timed(workload: Workload, m: Machine) -> float:
    workload.run(m)                       # warm-up: translate the code once
    gc.disable()
    try:
        start = time.perf_counter()
        workload.run(m)
        return time.perf_counter() - start
    finally:
        gc.enable()


def bare_case(workload: Workload) -> Case:
    return Case(f"bare {workload.name}", workload, lambda m: None, group="bare")


def per_hit_us(case: Case, bare: Case) -> float:
    return (case.seconds - bare.seconds) / case.workload.hits * 1e6
