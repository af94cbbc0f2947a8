"""``make bench``: per-hit overhead of every probe kind against the floor and the
peers, the scaling curves and the memory cost; a table, a JSON file and a chart.

Usage: ``python -m benchmarks.run [--reps N] [--out DIR] [--no-qiling]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import qiling_probe
from ._cases import (
    CALLS,
    DEPTHS,
    FLOOR_RAW,
    FLOOR_STOCK,
    OPTIMIZED_COUNTS,
    PROBE_COUNTS,
    TASKS,
    default_vs_raw,
    main_cases,
    scale_cases,
)
from ._harness import Case
from ._memory import kretprobes_mib
from ._targets import KERNEL_US, QILING, TARGETS, peer_figures
from ._wholerun import TRACE_RATIO, WholeRun, whole_runs
from .check import Verdict, native_in_use, verdicts

RESULTS = Path(__file__).resolve().parent / "results"


def measure(reps: int, with_qiling: bool, console: Console) -> dict:
    main, scale, tools = main_cases(), scale_cases(), whole_runs()
    everything = main + [c for cs in scale.values() for c in cs]
    qiling_note = qiling_probe.available() if with_qiling else "skipped (--no-qiling)"
    steps = reps * (len(everything) + len(tools)) + (reps if qiling_note is None else 0) + 2
    qiling_us = None
    columns = (TextColumn("{task.description:<48}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("benchmarks", total=steps)
        for rep in range(reps):
            for case in everything:
                progress.update(task, description=f"[{rep + 1}/{reps}] {case.name}")
                case.sample()
                progress.advance(task)
            for run in tools:           # whole runs take seconds: a few samples, see WholeRun
                if run.wants_sample():
                    progress.update(task, description=f"[{rep + 1}/{reps}] {run.tool}, whole run")
                    run.sample()
                progress.advance(task)
        if qiling_note is None:
            progress.update(task, description="qiling return probe")
            qiling_us = qiling_probe.per_hit_us(CALLS, reps)
            progress.advance(task, reps)
        progress.update(task, description="memory of 1,000 kretprobes")
        memory = kretprobes_mib()
        progress.advance(task, 2)
        progress.update(task, description="unprobed run, default settings / raw Unicorn")
        default_raw = default_vs_raw(reps)
    results = _results(main, scale, qiling_us, qiling_note, memory, reps)
    results["ratios"]["default settings / raw Unicorn"] = default_raw
    results["whole_runs"] = _whole_run_results(tools)
    ratios = results["ratios"]
    ratios.update({run.name: run.ratio for run in tools})
    native, python = ratios.get("trace / unprobed"), ratios.get("trace, Python events / unprobed")
    if native is not None and python:          # each against its own paired unprobed runs
        ratios[TRACE_RATIO] = native / python
    return results


def _whole_run_results(tools: list[WholeRun]) -> dict:
    return {run.tool: {"program": f"fib.static {run.n}", "hits": run.hits, "samples": len(run.pairs),
                       "unprobed_s": statistics.median(b for b, _ in run.pairs),
                       "tool_s": statistics.median(p for _, p in run.pairs), "ratio": run.ratio,
                       "unprobed_tool_seconds": run.pairs}
            for run in tools}


def _results(main: list[Case], scale: dict[str, list[Case]], qiling_us: float | None,
             qiling_note: str | None, memory: dict[str, float], reps: int) -> dict:
    def hit(case: Case) -> float:
        return case.per_hit_us

    everything = main + [c for cs in scale.values() for c in cs]
    raw = {c.name: {"workload": c.workload.name, "hits": c.workload.hits,
                    "bare_probed_seconds": c.pairs} for c in everything}

    floors = {c.name: hit(c) for c in main if c.group == "floor"}
    floor, raw_floor = floors[FLOOR_STOCK], floors[FLOOR_RAW]
    rows: list[dict[str, Any]] = []
    for case in main:
        if case.group == "floor":
            continue
        us = hit(case)
        kernel = KERNEL_US.get(case.name)
        rows.append({"case": case.name, "group": case.group, "us": us, "x_floor": us / floor,
                     "x_raw": us / raw_floor,
                     "kernel": {"label": kernel[0], "us": kernel[1]} if kernel else None})
    if qiling_us is not None:
        rows.append({"case": QILING, "group": "peer",
                     "us": qiling_us, "x_floor": qiling_us / floor, "x_raw": qiling_us / raw_floor,
                     "kernel": None})
    by_name = {r["case"]: r["us"] for r in rows}
    count_int3 = [hit(c) for c in scale["count_int3"]]
    count_opt = [hit(c) for c in scale["count_optimized"]]
    opt_by_count = dict(zip(OPTIMIZED_COUNTS, count_opt, strict=True))
    depth = [hit(c) for c in scale["depth"]]
    tasks = [hit(c) for c in scale["tasks"]]
    ratios = {r["case"]: r["x_floor"] for r in rows}
    ratios.update({f"{r['case']} (x raw)": r["x_raw"] for r in rows})
    ratios.update({
        "naive / kretprobe": by_name["naive kretprobe (stock binding)"]
        / by_name["kretprobe, int3, no-op handlers"],
        "speed with 1000 elsewhere": scale["elsewhere"][0].speed_ratio,
        "speed with 1000 optimized elsewhere": scale["elsewhere"][1].speed_ratio,
        "1000 probes / 1 probe": count_int3[-1] / count_int3[0],
        "1000 optimized probes / 1": opt_by_count[1000] / opt_by_count[1],
        "10000 optimized probes / 1": opt_by_count[10000] / opt_by_count[1],
        "depth 1000 / depth 1": depth[-1] / depth[0],
        "8 tasks / 1 task": tasks[-1] / tasks[0],
        "8 tasks / 2 tasks": tasks[-1] / tasks[1],
        "memory MiB": memory["delta_mib"],
    })
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        "reps": reps, "hits_per_run": CALLS, "floor_us": floor, "floors_us": floors, "rows": rows,
        "qiling_note": qiling_note, "native": native_status(),
        # per_hit_optimized_us pairs with probe_counts (the chart plots them together);
        # the counts measured for optimized probes only follow apart.
        "scale": {"probe_counts": list(PROBE_COUNTS), "per_hit_int3_us": count_int3,
                  "per_hit_optimized_us": [opt_by_count[n] for n in PROBE_COUNTS],
                  "optimized_only_counts": [n for n in OPTIMIZED_COUNTS if n not in PROBE_COUNTS],
                  "per_hit_optimized_only_us": [opt_by_count[n] for n in OPTIMIZED_COUNTS
                                                if n not in PROBE_COUNTS],
                  "depths": list(DEPTHS),
                  "per_hit_depth_us": depth, "tasks": list(TASKS), "per_hit_tasks_us": tasks},
        "memory": memory, "ratios": ratios, "raw": raw,
    }


def native_status() -> dict[str, Any]:
    """Whether this process runs the probes' hit paths in C (benchmarks.check
    enforces issue 12's targets only then), and if not, why not."""
    from emu import native
    from probes import _cnative

    available = native.AVAILABLE and _cnative.NATIVE is not None
    why_not = native.WHY_NOT or ("" if available else "probes._native could not be imported")
    return {"available": available, "why_not": why_not}


def _floor_rows(results: dict) -> list[tuple[str, float, float, float]]:
    floors = results["floors_us"]
    stock, raw = floors[FLOOR_STOCK], floors[FLOOR_RAW]
    return [(name, us, us / stock, us / raw) for name, us in floors.items()]


def table(results: dict) -> Table:
    t = Table(title=f"Per-hit overhead, median of {results['reps']} samples "
                    f"(floor = the stock binding's hook, {results['floor_us']:.3f} µs)")
    for col, just in (("case", "left"), ("µs / hit", "right"), ("× floor", "right"),
                      ("× raw floor", "right"), ("kernel (µs)", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for name, us, x, xr in _floor_rows(results):
        t.add_row(name, f"{us:.3f}", f"{x:.2f}", f"{xr:.2f}", "")
    for r in results["rows"]:
        k = r["kernel"]
        t.add_row(r["case"], f"{r['us']:.3f}", f"{r['x_floor']:.2f}", f"{r['x_raw']:.2f}",
                  f"{k['label']} = {k['us']}" if k else "")
    return t


def targets_table(results: dict) -> Table:
    t = Table(title="Targets")
    for col in ("target", "value", "bound", "met"):
        t.add_column(col)
    for v in verdicts(results):
        met = ("[green]yes" if v.met else "[red]NO") if v.enforced else ("yes" if v.met else "no")
        t.add_row(_label(v), _value(v), f"{v.target.op} {v.target.bound}", met)
    in_use, why_not = native_in_use(results)
    if not in_use:
        t.caption = f"issue 12's targets not enforced: native core not in use: {why_not}"
    return t


def _label(v: Verdict) -> str:
    if v.target in TARGETS:
        return v.target.label
    return f"{v.target.label} (issue 12{'' if v.enforced else ', not enforced'})"


def _value(v: Verdict) -> str:
    return "not measured" if v.value is None else f"{v.value:.2f}"


def peers_table(results: dict) -> Table:
    t = Table(title="Peers (µs / hit)")
    for col, just in (("peer", "left"), ("µs / hit", "right"), ("source", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for p in peer_figures(results):
        t.add_row(p.name, f"{p.us:.3f}", "measured here" if p.measured else "cited (issue 12)")
    return t


def scale_table(results: dict) -> Table:
    s = results["scale"]
    t = Table(title="Scaling (µs / hit)")
    t.add_column("probes registered")
    t.add_column("int3", justify="right")
    t.add_column("optimized", justify="right")
    for n, int3, opt in _count_rows(s):
        t.add_row(str(n), int3, opt)
    for d, us in zip(s["depths"], s["per_hit_depth_us"], strict=True):
        t.add_row(f"kretprobe at recursion depth {d}", f"{us:.3f}", "")
    for n, us in zip(s["tasks"], s["per_hit_tasks_us"], strict=True):
        t.add_row(f"kretprobe, {n} task(s) running", f"{us:.3f}", "")
    return t


def _count_rows(s: dict) -> list[tuple[int, str, str]]:
    """(probes, int3 µs, optimized µs) for each count, "–" where it was not measured."""
    both = zip(s["probe_counts"], s["per_hit_int3_us"], s["per_hit_optimized_us"], strict=True)
    rows = [(n, f"{a:.3f}", f"{b:.3f}") for n, a, b in both]
    rows += [(n, "–", f"{b:.3f}") for n, b in zip(s.get("optimized_only_counts", []),
                                                  s.get("per_hit_optimized_only_us", []), strict=True)]
    return rows


def _whole_run_lines(results: dict) -> list[str]:
    runs = results.get("whole_runs", {})
    lines = ["", "Whole runs, in-process (`kprobe-emu TOOL fib PROGRAM` against `kprobe-emu run "
             "PROGRAM`), median of paired samples:", "",
             "| tool | program | calls of fib | samples | unprobed s | tool s | × unprobed |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for tool, r in runs.items():
        lines.append(f"| {tool} | {r['program']} | {r['hits']:,} | {r['samples']} | {r['unprobed_s']:.3f} | "
                     f"{r['tool_s']:.3f} | {r['ratio']:.2f} |")
    return lines if runs else []


def whole_run_table(results: dict) -> Table:
    t = Table(title="Whole runs, tool / unprobed (median of paired samples)")
    for col, just in (("tool", "left"), ("program", "left"), ("calls of fib", "right"), ("samples", "right"),
                      ("unprobed s", "right"), ("tool s", "right"), ("× unprobed", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for tool, r in results["whole_runs"].items():
        t.add_row(tool, r["program"], f"{r['hits']:,}", str(r["samples"]), f"{r['unprobed_s']:.3f}",
                  f"{r['tool_s']:.3f}", f"{r['ratio']:.2f}")
    return t


def markdown(results: dict) -> str:
    """The per-hit table, the peers, the scaling and the targets as Markdown (pasted
    into README.md)."""
    lines = [f"Median of {results['reps']} paired samples (best of 3 calls each), "
             f"{results['hits_per_run']:,} hits a call, "
             f"{results['date']}, {results['machine']['processor']}, Python {results['machine']['python']}.",
             "", "| case | µs / hit | × floor | × raw floor | kernel, x86-64 (µs) |",
             "|---|---:|---:|---:|---:|"]
    for name, us, x, xr in _floor_rows(results):
        lines.append(f"| {name} | {us:.3f} | {x:.2f} | {xr:.2f} | |")
    for r in results["rows"]:
        k = r["kernel"]
        lines.append(f"| {r['case']} | {r['us']:.3f} | {r['x_floor']:.2f} | {r['x_raw']:.2f} | "
                     f"{k['label']} = {k['us']} |" if k else
                     f"| {r['case']} | {r['us']:.3f} | {r['x_floor']:.2f} | {r['x_raw']:.2f} | |")
    lines += _peer_lines(results)
    s = results["scale"]
    lines += ["", "| probes registered | int3 µs / hit | optimized µs / hit |", "|---:|---:|---:|"]
    for n, int3, opt in _count_rows(s):
        lines.append(f"| {n} | {int3} | {opt} |")
    lines += ["", "| kretprobe | µs / hit |", "|---|---:|"]
    for d, us in zip(s["depths"], s["per_hit_depth_us"], strict=True):
        lines.append(f"| recursion depth {d} | {us:.3f} |")
    for n, us in zip(s["tasks"], s["per_hit_tasks_us"], strict=True):
        lines.append(f"| {n} task(s) running (scheduler) | {us:.3f} |")
    lines += _whole_run_lines(results)
    lines += _target_lines(results)
    return "\n".join(lines) + "\n"


def _peer_lines(results: dict) -> list[str]:
    lines = ["", "Peers: Frida instruments native code, not emulated code, so its hit is native "
             "execution plus the handler; Qiling is measured here when installed, else cited.", "",
             "| peer | µs / hit | source | how measured |", "|---|---:|---|---|"]
    for p in peer_figures(results):
        source = "measured here" if p.measured else "cited (issue 12)"
        lines.append(f"| {p.name} | {p.us:.3f} | {source} | {p.how} |")
    return lines


def _target_lines(results: dict) -> list[str]:
    """The targets enforced always, then issue 12's (enforced with the native core in use)."""
    header = ["", "| target | value | bound | met |", "|---|---:|---:|---|"]
    in_use, why_not = native_in_use(results)
    everything = verdicts(results)
    lines = header + [_target_row(v) for v in everything if v.target in TARGETS]
    state = ("enforced: the native core was in use" if in_use
             else f"enforced when the native core is in use; it was not here: {why_not}")
    lines += ["", f"Issue 12's targets, against the raw ctypes floor ({state}):"] + header
    return lines + [_target_row(v) for v in everything if v.target not in TARGETS]


def _target_row(v: Verdict) -> str:
    met = "yes" if v.met else "**no**" if v.enforced else "no"
    return f"| {v.target.label} | {_value(v)} | {v.target.op} {v.target.bound} | {met} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--reps", type=int, default=9, help="repetitions per case (median)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results.json and results.png go")
    parser.add_argument("--no-qiling", action="store_true", help="skip the Qiling peer")
    args = parser.parse_args(argv)
    # The console keeps the real stdout: whole runs redirect sys.stdout while the
    # progress bar refreshes from its own thread.
    console = Console(file=sys.stdout)
    results = measure(args.reps, not args.no_qiling, console)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    console.print(table(results))
    console.print(peers_table(results))
    console.print(scale_table(results))
    console.print(whole_run_table(results))
    m = results["memory"]
    console.print(f"memory: 1,000 kretprobes (maxactive 10, data_size 64): "
                  f"{m['probes_mib']:.1f} MiB peak RSS vs {m['none_mib']:.1f} MiB without "
                  f"(+{m['delta_mib']:.2f} MiB)")
    if results["qiling_note"]:
        console.print(f"qiling: {results['qiling_note']}")
    console.print(targets_table(results))
    try:
        from ._chart import draw
    except ImportError as exc:
        console.print(f"chart skipped: {exc} (pip install matplotlib)")
    else:
        draw(results, args.out / "results.png")
        console.print(f"wrote results.json, results.md and results.png in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
