"""The PNG chart of a results dict: the per-hit table as bars, and the scaling curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def draw(results: dict, path: Path) -> None:
    rows = results["rows"]
    floor = results["floor_us"]
    fig = plt.figure(figsize=(12, 9), constrained_layout=True)
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 2])
    bars = fig.add_subplot(grid[0, :])
    floors = results.get("floors_us", {"floor: stock no-op code hook": floor})
    names = list(floors) + [r["case"] for r in rows]
    values = list(floors.values()) + [r["us"] for r in rows]
    colors = ["#888888"] * len(floors) + ["#d98c2b" if r["group"] == "peer" else "#2b6cd9" for r in rows]
    y = range(len(names))
    bars.barh(list(y), values, color=colors)
    bars.set_yticks(list(y), names)
    bars.invert_yaxis()
    bars.axvline(floor, color="#888888", linestyle="--", linewidth=1)
    for i, v in enumerate(values):
        bars.text(v, i, f" {v:.2f} µs ({v / floor:.1f}×)", va="center", fontsize=8)
    bars.set_xlabel("µs per hit (median)")
    bars.set_title(f"kprobe-emu per-hit overhead ({results['machine']['processor']}, "
                   f"Python {results['machine']['python']})")
    s = results["scale"]
    count = fig.add_subplot(grid[1, 0])
    count.plot(s["probe_counts"], s["per_hit_int3_us"], "o-", label="int3")
    count.plot(s["probe_counts"], s["per_hit_optimized_us"], "s-", label="optimized")
    count.set_xscale("log")
    count.set_xlabel("probes registered")
    count.set_ylabel("µs per hit")
    count.set_title("per-hit cost vs probes registered")
    count.legend()
    depth = fig.add_subplot(grid[1, 1])
    depth.plot(s["depths"], s["per_hit_depth_us"], "o-", color="#2b9d4a")
    depth.set_xscale("log")
    depth.set_xlabel("recursion depth")
    depth.set_ylabel("µs per kretprobe hit")
    depth.set_title("kretprobe per-hit cost vs recursion depth")
    for ax in (count, depth):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
