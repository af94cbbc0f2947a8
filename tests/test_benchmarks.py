"""The benchmark tooling works (not the timings: those are `make bench`'s job)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import check
from benchmarks._cases import (
    LEAF,
    deep_workload,
    floor_cases,
    framed_functions,
    kretprobe,
    naive,
    probes_registered,
    tasks_workload,
)
from benchmarks._targets import NATIVE_TARGETS, TARGETS
from benchmarks.run import markdown


def test_every_workload_checks_its_result_under_every_kind_of_probe() -> None:
    for setup in (kretprobe(), kretprobe(optimized=True), kretprobe(optimized=True, handler=False), naive):
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


def test_framed_functions_are_what_keystone_assembles() -> None:
    """The 10,000-function guest is built without Keystone: the bytes and symbols
    must be those of guest.many_functions assembled at the same base."""
    import guest
    from emu._asm import assemble

    out = assemble(guest.many_functions(300), 0x400000)
    assert framed_functions(300, 0x400000) == (out.code, out.symbols)


def test_optimized_probes_on_the_framed_functions_leave_results_alone() -> None:
    """The largest optimized count's set-up (one probe on leaf, the rest on f0..),
    here on 50 functions: leaf_loop and the probed functions still return right."""
    from benchmarks._cases import MOST, bench_with_functions, scale_cases

    m = bench_with_functions(50)
    probes_registered(50, optimized=True)(m)
    LEAF.run(m)
    assert [m.call(f"f{i}") for i in (0, 1, 48)] == [0, 1, 48]
    largest = scale_cases()["count_optimized"][-1]
    assert largest.name == f"{MOST} probes (optimized)" and str(MOST) in largest.workload.name


def test_whole_runs_of_the_tools_count_every_call() -> None:
    """funccount and funclatency against run, in-process, on fib.static 12: each
    sample checks the status, the guest's output and the report's count of calls."""
    from benchmarks._wholerun import fib_calls, whole_runs
    from tests.guests import guest_bin

    guest_bin()
    assert fib_calls(28) == 1_028_457           # the benchmark's "about 1 M hits"
    for run in whole_runs(12):
        run.sample()
        assert run.hits == fib_calls(12) == 465
        assert len(run.pairs) == 1 and run.ratio > 0 and run.wants_sample()


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
               "rows": rows, "scale": {"probe_counts": [1], "per_hit_int3_us": [0.5],
                                        "per_hit_optimized_us": [0.3], "optimized_only_counts": [10000],
                                        "per_hit_optimized_only_us": [0.4],
                                        "depths": [], "per_hit_depth_us": [], "tasks": [],
                                        "per_hit_tasks_us": []},
               "whole_runs": {"funccount": {"program": "fib.static 28", "hits": 1028457, "samples": 3,
                                            "unprobed_s": 0.1, "tool_s": 5.0, "ratio": 50.0}},
               "ratios": {t.metric: 1.0 for t in TARGETS + NATIVE_TARGETS}}
    text = markdown(results)
    assert "| floor: raw ctypes no-op code hook | 0.120 | 0.40 | 1.00 | |" in text
    assert "| kprobe, optimized | 0.300 | 1.00 | 2.50 | |" in text
    assert "| 1 | 0.500 | 0.300 |" in text and "| 10000 | – | 0.400 |" in text
    assert "| funccount | fib.static 28 | 1,028,457 | 3 | 0.100 | 5.000 | 50.00 |" in text
    assert all(t.label in text for t in NATIVE_TARGETS)


def test_default_settings_against_raw_unicorn_runs_the_same_code() -> None:
    """The ratio is measured on one machine (ours: m.call; raw: uc.emu_start)."""
    from benchmarks._cases import default_vs_raw

    assert default_vs_raw(1) > 0
