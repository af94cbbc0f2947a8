"""The PNG of a report: per probe, the per-hit cost as a stacked bar of mechanism
and handler (medians), the 95% interval of the whole, and the raw floor."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._measure import OverheadReport

__all__ = ["draw_chart"]


def draw_chart(report: OverheadReport, path: str | Path) -> None:
    """Write the chart of ``report`` to ``path`` (matplotlib, Agg backend).

    Raises:
        ImportError: matplotlib is not installed.
        OSError: ``path`` cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [p.probe for p in report.probes]
    mechanism = [max(p.mechanism_us.median, 0.0) for p in report.probes]
    handler = [max(p.per_hit_us.median - m, 0.0) for p, m in zip(report.probes, mechanism, strict=True)]
    lo = [max(p.per_hit_us.median - p.per_hit_us.ci95[0], 0.0) for p in report.probes]
    hi = [max(p.per_hit_us.ci95[1] - p.per_hit_us.median, 0.0) for p in report.probes]
    y = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(12, 2.0 + 0.7 * len(names)), constrained_layout=True)
    ax.barh(y, mechanism, color="#2b6cd9", label="mechanism (no-op probe of the same kind)")
    ax.barh(y, handler, left=mechanism, color="#d98c2b", label="handler")
    totals = [m + h for m, h in zip(mechanism, handler, strict=True)]
    ax.errorbar(totals, y, xerr=[lo, hi], fmt="none", ecolor="black", capsize=3,
                label="95% interval of the per-hit cost")
    floors = [p.floor_us.median for p in report.probes if p.floor_us.median > 0]
    if floors:
        floor = min(floors)
        ax.axvline(floor, color="#888888", linestyle="--", linewidth=1,
                   label=f"raw ctypes floor ({floor:.2f} µs)")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("µs per hit (median)")
    load = report.host.get("loadavg") or []
    ax.set_title(f"per-hit cost: {report.runs} paired samples, unprobed run "
                 f"{report.unprobed_s * 1e3:.1f} ms" + (f", load {load[0]:.2f}" if load else ""))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
