"""When a report's figures cannot be trusted, and what to do about it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._measure import OverheadReport, ProbeResult

__all__ = ["report_warnings"]


def report_warnings(report: OverheadReport, results: list[tuple[object, object]]) -> list[str]:
    """The warnings of ``report``; ``results`` pairs, per probe, what the unprobed
    and the probed counting runs returned (an exit status)."""
    from ._measure import MIN_HITS

    out: list[str] = []
    for probe, (unprobed, probed) in zip(report.probes, results, strict=True):
        out += _probe_warnings(probe, MIN_HITS)
        if unprobed != probed:
            out.append(f"{probe.probe}: the probed run returned {probed!r}, the unprobed one "
                       f"{unprobed!r}: the probe changes what the program does")
    load, cpus = report.host.get("loadavg") or [0.0], report.host.get("cpus", 1)
    if load[0] > cpus:
        out.append(f"the host is busy (load average {load[0]:.2f} on {cpus} CPUs): "
                   f"figures are noisier than on an idle machine")
    return out


def _probe_warnings(p: ProbeResult, min_hits: int) -> list[str]:
    if p.hits == 0:
        return [f"{p.probe}: never hit: the per-hit figures are the whole run's extra cost; "
                f"probe a function the program calls"]
    out = []
    if p.hits < min_hits:
        out.append(f"{p.probe}: only {p.hits} hits (fewer than {min_hits:,}): per-hit figures are "
                   f"mostly the host's noise; give the program a bigger workload")
    effect = p.per_hit_us
    if effect.width > abs(effect.median):
        out.append(f"{p.probe}: the spread is wider than the effect (95% interval "
                   f"{effect.ci95[0]:.3f}..{effect.ci95[1]:.3f} µs around {effect.median:.3f} µs "
                   f"per hit): use more --repeats, a bigger workload or a quieter machine")
    if p.missed:
        out.append(f"{p.probe}: {p.missed:,} hits missed (no free instance, or inside a handler): "
                   f"their cost is in the per-hit figures; give a return probe more instances (rN)")
    if p.floor_ratio is None:
        out.append(f"{p.probe}: the raw floor did not rise above the noise: no ratio to it")
    return out
