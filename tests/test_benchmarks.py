"""The benchmark tooling works (not the timings: those are `make bench`'s job)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import check
from benchmarks._cases import LEAF, deep_workload, kretprobe, naive, tasks_workload
from benchmarks._targets import TARGETS


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
