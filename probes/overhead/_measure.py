"""``measure``: what probes cost on a workload, in paired, interleaved samples.

The method is ``make bench``'s (benchmarks/_harness.py): every sample times the
workload unprobed and probed back to back, each the best of ``best_of`` runs
with the garbage collector paused, and the samples of all cases are
interleaved, so that drift of a noisy host cancels in each pair's difference.
A program's run cannot be repeated on one machine, so every run is on a fresh
machine (built and probed untimed), translation included on both sides of a
pair. Before the samples, one untimed run of each case warms the host up and
counts the hits.

Per probe, each sample gives four times: unprobed, the raw ctypes floor
(:mod:`._floor`), the no-op twin (the mechanism, :mod:`._points`) and the
probe itself. Per hit, in µs::

    per_hit   = (probed - unprobed) / hits
    mechanism = (twin   - unprobed) / twin's hits
    handler   = per_hit - mechanism          (per sample)
    floor     = (floor  - unprobed) / executions of the probed addresses

and ``slowdown = probed / unprobed``, each summarized over the samples
(:mod:`._stats`).
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emu import Machine

from ._floor import count_executions, install_floor
from ._points import ProbePoint, count_hits, point_of, register_twin, registered_probes
from ._stats import Spread, spread
from ._warnings import report_warnings

__all__ = ["measure", "OverheadReport", "ProbeResult", "Sample", "MIN_HITS", "BEST_OF"]

MakeMachine = Callable[[], Machine]
Attach = Callable[[Machine], object]
Run = Callable[[Machine], object]
Progress = Callable[[str], None]

BEST_OF = 3
MIN_HITS = 1000          # fewer hits: per-hit figures are mostly the host's noise
_US = 1e6


@dataclass(frozen=True)
class Sample:
    """One paired sample of one probe, in seconds (each the best of ``best_of`` runs)."""

    unprobed: float
    floor: float
    mechanism: float
    probed: float


@dataclass
class ProbeResult:
    """The figures of one probe (one ``attach``); costs in µs per hit.

    ``floor_us`` is the raw floor per execution of the probed addresses
    (``floor_hits`` of them in a run); ``samples`` the raw times.
    """

    probe: str
    hits: int
    missed: int
    per_hit_us: Spread
    mechanism_us: Spread
    handler_us: Spread
    floor_us: Spread
    floor_ratio: float | None
    slowdown: float
    points: list[ProbePoint]
    floor_hits: int
    samples: list[Sample] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """The issue's per-probe object (exactly its keys)."""
        return {"probe": self.probe, "hits": self.hits, "missed": self.missed,
                "per_hit_us": self.per_hit_us.to_json(), "mechanism_us": self.mechanism_us.to_json(),
                "handler_us": self.handler_us.to_json(),
                "floor_ratio": None if self.floor_ratio is None else round(self.floor_ratio, 3),
                "slowdown": round(self.slowdown, 4)}


@dataclass
class OverheadReport:
    """What :func:`measure` found.

    Attributes:
        runs: paired samples taken (``repeats``).
        unprobed_s: the median unprobed run, in seconds.
        probes: one :class:`ProbeResult` per ``attach``.
        warnings: why figures cannot be trusted (empty when they can).
        host: the host's load average (1, 5, 15 minutes) and CPUs at the end.
    """

    runs: int
    unprobed_s: float
    probes: list[ProbeResult]
    warnings: list[str]
    host: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """``{"runs", "unprobed_s", "probes": [...]}`` as the issue gives it, plus ``host``."""
        return {"runs": self.runs, "unprobed_s": round(self.unprobed_s, 6),
                "probes": [p.to_json() for p in self.probes], "host": self.host}


class _Case:
    """A probe under measurement: its attach, and what its counting run found."""

    def __init__(self, label: str | None, attach: Attach) -> None:
        self.label = label
        self.attach = attach
        self.points: list[ProbePoint] = []
        self.hits = self.missed = self.twin_hits = self.executions = 0
        self.result: object = None
        self.samples: list[Sample] = []

    def count(self, make: MakeMachine, run: Run) -> None:
        """The counting run (also the warm-up): the hits of the probe, of its twin,
        and the executions of the probed addresses, each on a fresh machine."""
        m = make()
        try:
            returned = self.attach(m)
            probes = registered_probes(m)
            if not probes:
                raise ValueError("attach() registered no probe on the machine")
        except BaseException:
            _dispose(m)
            raise
        self.points = [point_of(m, p) for p in probes]
        if self.label is None:
            self.label = _label(returned, self.points)
        counter = count_hits(probes)
        self.result = _run_once(m, run)
        self.hits, self.missed = counter.hits, counter.missed

        m = make()
        twins = count_hits([register_twin(m, p) for p in self.points])
        _run_once(m, run)
        self.twin_hits = twins.hits

        m = make()
        executions = count_executions(m, self.points)
        _run_once(m, run)
        self.executions = executions[0]

    def setup_floor(self, m: Machine) -> None:
        install_floor(m, self.points)

    def setup_twin(self, m: Machine) -> None:
        for p in self.points:
            register_twin(m, p)


def _label(returned: object, points: list[ProbePoint]) -> str:
    """An event's line when ``attach`` returned handles (probes.events), else the points."""
    handles = returned if isinstance(returned, list | tuple) else [returned]
    lines = [getattr(getattr(h, "spec", None), "_line", None) for h in handles]
    if lines and all(isinstance(line, str) and line for line in lines):
        return "; ".join(str(line) for line in lines)
    return "; ".join(p.text() for p in points)


def _default_run(m: Machine) -> object:
    return m.run()


def _dispose(m: Machine) -> None:
    """Give back a measured machine's host files, memory and engine now."""
    m.close()
    release = getattr(m, "release", None)
    if release is not None:
        release()


def _run_once(m: Machine, run: Run) -> object:
    try:
        return run(m)
    finally:
        _dispose(m)


def _timed(make: MakeMachine, setup: Attach | None, run: Run, best_of: int) -> float:
    """The best of ``best_of`` timed runs, each on a fresh machine set up untimed."""
    best = float("inf")
    for _ in range(best_of):
        m = make()
        if setup is not None:
            setup(m)
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run(m)
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
            _dispose(m)
    return best


def _cases(attach: Attach | Sequence[Attach] | Mapping[str, Attach]) -> list[_Case]:
    if isinstance(attach, Mapping):
        return [_Case(label, fn) for label, fn in attach.items()]
    if callable(attach):
        return [_Case(None, attach)]
    return [_Case(None, fn) for fn in attach]


def measure(make_machine: MakeMachine, attach: Attach | Sequence[Attach] | Mapping[str, Attach],
            run: Run | None = None, repeats: int = 9, *, best_of: int = BEST_OF,
            progress: Progress | None = None) -> OverheadReport:
    """Measure what probes cost on a workload.

    Args:
        make_machine: builds a fresh machine each call (``Machine.from_elf(...)``);
            capture the program's output here (``m.stdout = io.BytesIO()``).
        attach: ``attach(m)`` registers the probes (kprobes, kretprobes or
            ``probes.events.attach`` lines); several of them (a list, or a mapping
            of labels to them) are each measured on their own against the same
            unprobed runs.
        run: ``run(m)`` runs the workload (default ``m.run()``).
        repeats: paired samples (the report's ``runs``).
        best_of: timed runs per case and sample; the fastest is kept.
        progress: called with one line after each sample.

    Returns:
        The :class:`OverheadReport`.

    Raises:
        ValueError: ``repeats`` or ``best_of`` under 1, or an ``attach`` that
            registers no probe. Whatever ``make_machine``, ``attach`` or ``run``
            raise (a ``ProbeError``, a ``ParseError``, a ``GuestFault``).
    """
    if repeats < 1 or best_of < 1:
        raise ValueError(f"repeats and best_of must be at least 1, got {repeats} and {best_of}")
    run = run or _default_run
    cases = _cases(attach)
    if not cases:
        raise ValueError("measure() needs at least one attach")
    unprobed_result = _run_once(make_machine(), run)        # warm-up
    for case in cases:
        case.count(make_machine, run)
    if progress is not None:
        progress(", ".join(f"{c.label}: {c.hits:,} hits" for c in cases) + f"; {repeats} samples of "
                 f"{1 + 3 * len(cases)} cases, each the best of {best_of} runs")
    unprobed: list[float] = []
    for i in range(repeats):
        bare = _timed(make_machine, None, run, best_of)
        unprobed.append(bare)
        for case in cases:
            case.samples.append(Sample(bare, _timed(make_machine, case.setup_floor, run, best_of),
                                       _timed(make_machine, case.setup_twin, run, best_of),
                                       _timed(make_machine, case.attach, run, best_of)))
        if progress is not None:
            progress(f"sample {i + 1}/{repeats}: unprobed {bare:.4f} s, " + ", ".join(
                f"{c.label} {c.samples[-1].probed:.4f} s" for c in cases))
    results = [_result(case) for case in cases]
    host = _host()
    report = OverheadReport(repeats, statistics.median(unprobed), results, [], host)
    report.warnings = report_warnings(report, [(unprobed_result, c.result) for c in cases])
    return report


def _result(case: _Case) -> ProbeResult:
    hits, twin_hits, execs = max(case.hits, 1), max(case.twin_hits, 1), max(case.executions, 1)
    per_hit = [(s.probed - s.unprobed) / hits * _US for s in case.samples]
    mechanism = [(s.mechanism - s.unprobed) / twin_hits * _US for s in case.samples]
    floor = spread([(s.floor - s.unprobed) / execs * _US for s in case.samples])
    per_hit_s = spread(per_hit)
    ratio = per_hit_s.median / floor.median if floor.median > 0 and case.executions else None
    assert case.label is not None
    return ProbeResult(case.label, case.hits, case.missed, per_hit_s, spread(mechanism),
                       spread([p - q for p, q in zip(per_hit, mechanism, strict=True)]), floor,
                       ratio, statistics.median(s.probed / s.unprobed for s in case.samples),
                       case.points, case.executions, case.samples)


def _host() -> dict[str, Any]:
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:                     # not available on this host
        load = []
    return {"loadavg": load, "cpus": os.cpu_count() or 1}
