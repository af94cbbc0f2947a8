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
from benchmarks._targets import NATIVE_TARGETS, PEERS_US, QILING, TARGETS, Target, peer_figures
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
    """funccount, funclatency and trace (native and Python events) against run,
    in-process, on fib.static 12: each sample checks the status, the guest's output
    and the report's count of calls."""
    from benchmarks._wholerun import fib_calls, whole_runs
    from tests.guests import guest_bin

    guest_bin()
    assert fib_calls(28) == 1_028_457           # the benchmark's "about 1 M hits"
    runs = whole_runs(12)
    assert {"trace", "trace, Python events"} <= {run.tool for run in runs}
    for run in runs:
        run.sample()
        assert run.hits == fib_calls(12) == 465
        assert len(run.pairs) == 1 and run.ratio > 0 and run.wants_sample()


def _meeting(targets: tuple[Target, ...]) -> dict[str, float]:
    """A ratio for each target's metric that just meets it."""
    return {t.metric: (t.bound - 0.01 if t.op != ">=" else t.bound + 0.01) for t in targets}


def _missing(targets: tuple[Target, ...]) -> dict[str, float]:
    """A ratio for each target's metric that misses it."""
    return {t.metric: (t.bound + 1 if t.op != ">=" else t.bound - 0.5) for t in targets}


def _write(tmp_path: Path, name: str, results: dict) -> str:
    (tmp_path / name).write_text(json.dumps(results))
    return str(tmp_path / name)


def test_check_passes_and_fails_on_the_bounds(tmp_path: Path) -> None:
    assert check.main([_write(tmp_path, "good.json", {"ratios": _meeting(TARGETS)})]) == 0
    assert check.main([_write(tmp_path, "bad.json", {"ratios": _missing(TARGETS)})]) == 1
    assert check.main([str(tmp_path / "missing.json")]) == 2


def test_check_enforces_issue_12_targets_when_the_native_core_was_in_use(tmp_path: Path) -> None:
    """results["native"]["available"]: NATIVE_TARGETS count as TARGETS do, and one miss fails."""
    native = {"available": True, "why_not": ""}
    ratios = {**_meeting(TARGETS), **_meeting(NATIVE_TARGETS)}   # "memory MiB" meets both
    assert check.main([_write(tmp_path, "met.json", {"native": native, "ratios": ratios})]) == 0
    first = NATIVE_TARGETS[0]
    missed = {"native": native, "ratios": {**ratios, **_missing((first,))}}
    assert check.main([_write(tmp_path, "missed.json", missed)]) == 1
    assert [line for line in check.check(missed) if line.startswith("MISS")] == [
        f"MISS {first.label}: {first.bound + 1:.2f} (target {first.op} {first.bound})"]


def test_check_skips_issue_12_targets_without_the_native_core(tmp_path: Path) -> None:
    """Native core off (or results older than the field): NATIVE_TARGETS are skip lines
    that say why, and the exit status is TARGETS' alone."""
    ratios = {**_missing(NATIVE_TARGETS), **_meeting(TARGETS)}
    off = {"native": {"available": False, "why_not": "disabled by KPE_NATIVE=0"}, "ratios": ratios}
    old = {"ratios": ratios}
    for name, results in (("off.json", off), ("old.json", old)):
        assert check.main([_write(tmp_path, name, results)]) == 0
        skipped = [line for line in check.check(results) if line.startswith("skip")]
        assert len(skipped) == len(NATIVE_TARGETS)
        assert all(t.label in line for t, line in zip(NATIVE_TARGETS, skipped, strict=True))
    assert all(line.endswith("; native core not in use: disabled by KPE_NATIVE=0")
               for line in check.check(off) if line.startswith("skip"))


def test_check_reports_a_missing_metric_as_a_miss(tmp_path: Path) -> None:
    """A target whose metric the results lack is a MISS naming the metric, not a KeyError;
    an issue 12 one without the native core is skipped as not measured."""
    gone, native_gone = TARGETS[0], NATIVE_TARGETS[-1]
    ratios = {**_meeting(TARGETS), **_meeting(NATIVE_TARGETS)}
    del ratios[gone.metric], ratios[native_gone.metric]
    for native, expected in ((True, [gone, native_gone]), (False, [gone])):
        results = {"native": {"available": native, "why_not": ""}, "ratios": ratios}
        lines = check.check(results)
        assert [line for line in lines if line.startswith("MISS")] == [
            f"MISS {t.label}: not measured (no {t.metric!r} in the results' ratios; rerun `make bench`)"
            for t in expected]
        assert check.main([_write(tmp_path, f"{native}.json", results)]) == 1
    assert any(line.startswith(f"skip {native_gone.label}: not measured") for line in lines)


def test_results_say_why_the_native_core_is_not_in_use() -> None:
    from benchmarks.run import native_status

    status = native_status()
    assert isinstance(status["available"], bool) and (status["available"] or status["why_not"])


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


def _results(qiling_us: float | None = None) -> dict:
    """A small results dict as benchmarks.run writes it, with Qiling measured or not."""
    rows = [{"case": "kprobe, optimized", "group": "probe", "us": 0.3, "x_floor": 1.0, "x_raw": 2.5,
             "kernel": None}]
    if qiling_us is not None:
        rows.append({"case": QILING, "group": "peer", "us": qiling_us, "x_floor": 25.0, "x_raw": 62.5,
                     "kernel": None})
    return {"reps": 1, "hits_per_run": 1, "date": "now", "machine": {"processor": "x", "python": "3"},
            "floor_us": 0.3, "floors_us": {"floor: stock no-op code hook": 0.3,
                                           "floor: raw ctypes no-op code hook": 0.12},
            "rows": rows, "scale": {"probe_counts": [1, 10], "per_hit_int3_us": [0.5, 0.5],
                                     "per_hit_optimized_us": [0.3, 0.3], "optimized_only_counts": [10000],
                                     "per_hit_optimized_only_us": [0.4],
                                     "depths": [1, 100], "per_hit_depth_us": [1.0, 1.1], "tasks": [1],
                                     "per_hit_tasks_us": [1.2]},
            "whole_runs": {"funccount": {"program": "fib.static 28", "hits": 1028457, "samples": 3,
                                         "unprobed_s": 0.1, "tool_s": 5.0, "ratio": 50.0}},
            "native": {"available": False, "why_not": "disabled by KPE_NATIVE=0"},
            "ratios": {**_meeting(TARGETS), **_meeting(NATIVE_TARGETS)}}


def test_markdown_states_every_target_against_its_floor() -> None:
    text = markdown(_results())
    assert "| floor: raw ctypes no-op code hook | 0.120 | 0.40 | 1.00 | |" in text
    assert "| kprobe, optimized | 0.300 | 1.00 | 2.50 | |" in text
    assert "| 1 | 0.500 | 0.300 |" in text and "| 10000 | – | 0.400 |" in text
    assert "| funccount | fib.static 28 | 1,028,457 | 3 | 0.100 | 5.000 | 50.00 |" in text
    assert all(t.label in text for t in NATIVE_TARGETS)
    assert "it was not here: disabled by KPE_NATIVE=0" in text


def test_markdown_marks_an_enforced_miss() -> None:
    """With the native core in use, a missed issue 12 target is a bold no."""
    results = _results()
    results["native"] = {"available": True, "why_not": ""}
    results["ratios"][NATIVE_TARGETS[0].metric] = NATIVE_TARGETS[0].bound + 1
    text = markdown(results)
    assert "(enforced: the native core was in use)" in text
    assert f"| {NATIVE_TARGETS[0].label} | {NATIVE_TARGETS[0].bound + 1:.2f} | " in text
    assert text.count("| **no** |") == 1


def test_markdown_lists_the_peers_measured_here_or_cited() -> None:
    """Frida is always cited; Qiling is the run's own figure when it measured one."""
    cited, measured = markdown(_results()), markdown(_results(qiling_us=7.5))
    for text in (cited, measured):
        assert "| peer | µs / hit | source | how measured |" in text
        for name in PEERS_US:
            if name != QILING:
                assert f"| {name} | {PEERS_US[name].us:.3f} | cited (issue 12) | native code, not emulated" \
                    in text
    assert f"| {QILING} | 8.300 | cited (issue 12) |" in cited
    assert f"| {QILING} | 7.500 | measured here |" in measured


def test_the_chart_draws_with_and_without_a_measured_qiling_figure(tmp_path: Path) -> None:
    from benchmarks._chart import draw

    for qiling_us in (None, 7.5):
        path = tmp_path / f"chart-{qiling_us}.png"
        results = _results(qiling_us)
        draw(results, path)
        assert path.read_bytes().startswith(b"\x89PNG")
        qiling = [p for p in peer_figures(results) if p.name == QILING]
        assert [(p.us, p.measured) for p in qiling] == [(7.5, True) if qiling_us else (8.3, False)]


def test_default_settings_against_raw_unicorn_runs_the_same_code() -> None:
    """The ratio is measured on one machine (ours: m.call; raw: uc.emu_start)."""
    from benchmarks._cases import default_vs_raw

    assert default_vs_raw(1) > 0
