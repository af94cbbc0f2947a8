"""The benchmark tooling works (not the timings: those are `make bench`'s job)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import check
from benchmarks._cases import LEAF, deep_workload, floor_cases, kretprobe, naive, tasks_workload
from benchmarks._targets import NATIVE_TARGETS, TARGETS
from benchmarks.run import markdown


def test_every_workload_checks_its_result_under_every_kind_of_probe() -> None:
    for setup in (kretprobe(), kretprobe(optimized=True), naive):
        m = LEAF.make()
        setup(m)
        LEAF.run(m)
    m = deep_workload(100).make()
    kretprobe(func="deep", maxactive=200)(m)
    deep_workload(100).run(m)
    m = tasks_workload(8).make()
    kretprobe()(m)
    tasks_workload(8).run(m)
    assert len(m.tasks) == 9 and all(t.done for t in m.tasks[1:])


def _results(value: float) -> dict:
    return {"ratios": {t.metric: value for t in TARGETS}}


def test_check_passes_and_fails_on_the_bounds(tmp_path: Path) -> None:
    good = {"ratios": {t.metric: (t.bound - 0.01 if t.op != ">=" else t.bound + 0.01)
                       for t in TARGETS}}
    bad = {"ratios": {t.metric: (t.bound + 1 if t.op != ">=" else t.bound - 0.5) for t in TARGETS}}
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert check.main([str(tmp_path / "good.json")]) == 0
    assert check.main([str(tmp_path / "bad.json")]) == 1
    assert check.main([str(tmp_path / "missing.json")]) == 2


def test_the_three_floors_run_the_workload() -> None:
    """Stock binding, raw ctypes and (when built) C no-op hooks on leaf: each
    leaves the result alone; the C one exists wherever the native core was built."""
    from emu import native

    cases = floor_cases()
    assert len(cases) == (3 if native.AVAILABLE else 2)
    for case in cases:
        m = LEAF.make()
        case.setup(m)
        LEAF.run(m)


def test_markdown_states_every_target_against_its_floor() -> None:
    rows = [{"case": "kprobe, optimized", "group": "probe", "us": 0.3, "x_floor": 1.0, "x_raw": 2.5,
             "kernel": None}]
    results = {"reps": 1, "hits_per_run": 1, "date": "now", "machine": {"processor": "x", "python": "3"},
               "floor_us": 0.3, "floors_us": {"floor: stock no-op code hook": 0.3,
                                              "floor: raw ctypes no-op code hook": 0.12},
               "rows": rows, "scale": {"probe_counts": [], "per_hit_int3_us": [], "per_hit_optimized_us": [],
                                        "depths": [], "per_hit_depth_us": [], "tasks": [],
                                        "per_hit_tasks_us": []},
               "ratios": {t.metric: 1.0 for t in TARGETS + NATIVE_TARGETS}}
    text = markdown(results)
    assert "| floor: raw ctypes no-op code hook | 0.120 | 0.40 | 1.00 | |" in text
    assert "| kprobe, optimized | 0.300 | 1.00 | 2.50 | |" in text
    assert all(t.label in text for t in NATIVE_TARGETS)


def test_default_settings_against_raw_unicorn_runs_the_same_code() -> None:
    """The ratio is measured on one machine (ours: m.call; raw: uc.emu_start)."""
    from benchmarks._cases import default_vs_raw

    assert default_vs_raw(1) > 0
