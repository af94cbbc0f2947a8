"""The PNG chart of a results dict: the per-hit table and the peers as bars, and the
scaling curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ._targets import CITED_FROM, PEERS_US, peer_figures  # noqa: E402

# One colour per kind of bar; the legend names them.
_COLORS = {
    "floor": ("#888888", "floor (no-op hook)"),
    "probe": ("#2b6cd9", "kprobe-emu"),
    "peer": ("#d98c2b", "peer, measured in this run"),
    "cited": ("#8e5bb5", "peer, cited (issue 12; Frida runs native code, not emulated)"),
}


def draw(results: dict, path: Path) -> None:
    fig = plt.figure(figsize=(12, 10), constrained_layout=True)
    # Two subfigures: the bars' long labels must not push the scaling plots aside.
    top, bottom = fig.subfigures(2, 1, height_ratios=[3, 2])
    _bars(top.add_subplot(), results)
    s = results["scale"]
    count, depth = bottom.subplots(1, 2)
    _counts(count, s)
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


def _bars(ax: Axes, results: dict) -> None:
    """Floors, then every case, then the peers this run did not measure (cited)."""
    floor = results["floor_us"]
    floors = results.get("floors_us", {"floor: stock no-op code hook": floor})
    bars: list[tuple[str, float, str]] = [(name, us, "floor") for name, us in floors.items()]
    for r in results["rows"]:
        measured_peer = r["case"] in PEERS_US
        bars.append((f"{r['case']} (measured)" if measured_peer else r["case"], r["us"],
                     "peer" if r["group"] == "peer" else "probe"))
    bars += [(f"{p.name} (cited, issue 12)", p.us, "cited") for p in peer_figures(results) if not p.measured]
    y = list(range(len(bars)))
    ax.barh(y, [us for _, us, _ in bars], color=[_COLORS[kind][0] for _, _, kind in bars])
    ax.set_xlim(0, max(us for _, us, _ in bars) * 1.2)         # room for the labels
    ax.set_yticks(y, [name for name, _, _ in bars])
    ax.invert_yaxis()
    ax.axvline(floor, color="#888888", linestyle="--", linewidth=1)
    for i, (_, v, _) in enumerate(bars):
        ax.text(v, i, f" {v:.2f} µs ({v / floor:.1f}×)", va="center", fontsize=8)
    kinds = dict.fromkeys(kind for _, _, kind in bars)
    ax.legend(handles=[Patch(color=_COLORS[k][0], label=_COLORS[k][1]) for k in kinds],
              loc="center right", fontsize=8, title=f"cited: {CITED_FROM}", title_fontsize=7)
    ax.set_xlabel("µs per hit (median)")
    ax.set_title(f"kprobe-emu per-hit overhead ({results['machine']['processor']}, "
                 f"Python {results['machine']['python']})")


def _counts(ax: Axes, s: dict) -> None:
    """int3 through its counts; optimized through its own and the optimized-only ones (10,000)."""
    optimized = sorted([*zip(s["probe_counts"], s["per_hit_optimized_us"], strict=True),
                        *zip(s.get("optimized_only_counts", []), s.get("per_hit_optimized_only_us", []),
                             strict=True)])
    ax.plot(s["probe_counts"], s["per_hit_int3_us"], "o-", label="int3")
    ax.plot([n for n, _ in optimized], [us for _, us in optimized], "s-", label="optimized")
    ax.set_xscale("log")
    ax.set_xlabel("probes registered")
    ax.set_ylabel("µs per hit")
    ax.set_title("per-hit cost vs probes registered")
    ax.legend()
