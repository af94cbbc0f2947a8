"""``emu.sweep``: seeds grouped by outcome, in-process, in a process pool and on Ray.

Rules pinned (the seed-sweep issue): an outcome is (exit status, stdout, fault); the
most common outcome comes first, ties broken by the smaller smallest seed; a guest
fault is an outcome with the status a shell shows (139 for SIGSEGV) and its message;
a LoadError or an unexpected exception ends the sweep; the pool and Ray give exactly
the in-process result.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

from emu import EmuError, GuestFault, LoadError, Machine, Outcome, SweepResult, sweep
from tests.guests import run_emulated

# f returns the byte at `value`, read through the pointer at `pointer`.
_SCENARIO = """
f:
    mov rax, [rip + pointer]
    movzx eax, byte ptr [rax]
    ret
pointer:
    .quad 0
value:
    .byte 0
"""


def _scenario(seed: int, *, fault_on_odd: bool = False) -> Machine:
    """The scenario of one seed: value = seed % 3; a NULL pointer for odd seeds if asked."""
    m = Machine.from_asm(_SCENARIO)
    m.write(m.resolve("value"), bytes([seed % 3]))
    target = 0 if fault_on_odd and seed % 2 else m.resolve("value")
    m.write(m.resolve("pointer"), target.to_bytes(8, "little"))
    return m


def _call_f(m: Machine) -> int:
    return m.call("f") & 0xFF


def _seedy(binary: str, seed: int) -> Machine:
    """guest/bin/seedy: prints "roll R" and exits with R, a getrandom byte % 3."""
    return Machine.from_elf(binary, [binary, "3"], seed=seed)


def _refuse(seed: int) -> Machine:
    raise ValueError(f"a bug at seed {seed}")


def test_outcomes_are_grouped_most_common_first_ties_by_smallest_seed() -> None:
    result = sweep(_scenario, range(10), run=lambda m: m.call("f") & 0xFF)
    # value 0: seeds 0,3,6,9; value 1 and 2 tie with three seeds, 1 < 2 decides.
    assert result.runs == 10
    assert result.outcomes == [(Outcome(0, b""), [0, 3, 6, 9]), (Outcome(1, b""), [1, 4, 7]),
                               (Outcome(2, b""), [2, 5, 8])]
    assert result.majority == Outcome(0, b"", None)
    assert result.deviants() == result.outcomes[1:]


def test_json_shape() -> None:
    result = sweep(_scenario, [4, 1, 3], run=_call_f)
    assert result.to_json() == {"runs": 3, "outcomes": [
        {"exit": 1, "stdout": "", "fault": None, "seeds": [1, 4]},
        {"exit": 0, "stdout": "", "fault": None, "seeds": [3]},
    ]}


def test_stdout_is_decoded_with_replacement_in_json() -> None:
    result = SweepResult.from_groups({Outcome(0, b"ok \xff\n"): [2, 1]})
    assert result.to_json() == {"runs": 2, "outcomes": [
        {"exit": 0, "stdout": "ok \ufffd\n", "fault": None, "seeds": [1, 2]}]}


def test_a_guest_fault_is_an_outcome_with_the_shell_status_and_its_message() -> None:
    with pytest.raises(GuestFault) as direct:
        _call_f(_scenario(1, fault_on_odd=True))
    result = sweep(functools.partial(_scenario, fault_on_odd=True), range(6), run=_call_f)
    faulted = [(o, seeds) for o, seeds in result.outcomes if o.fault is not None]
    assert faulted == [(Outcome(139, b"", str(direct.value)), [1, 3, 5])]
    assert "read from unmapped memory" in str(direct.value)


def test_elf_outcomes_match_single_runs(guest_bin: Path) -> None:
    """Differential: each seed's outcome is what a run with that seed gives."""
    binary = str(guest_bin / "seedy")
    result = sweep(functools.partial(_seedy, binary), range(8))
    assert sorted(seed for _, seeds in result.outcomes for seed in seeds) == list(range(8))
    for outcome, seeds in result.outcomes:
        for seed in seeds:
            assert run_emulated([binary, "3"], seed=seed) == (outcome.exit, outcome.stdout)
    assert len(result.outcomes) > 1, "seedy should roll differently across 8 seeds"


def test_a_process_pool_gives_the_in_process_result(guest_bin: Path) -> None:
    make = functools.partial(_seedy, str(guest_bin / "seedy"))
    done: list[tuple[int, int]] = []
    pooled = sweep(make, range(12), jobs=2, progress=lambda n, total: done.append((n, total)))
    assert pooled == sweep(make, range(12))
    assert done[-1] == (12, 12) and [n for n, _ in done] == sorted(n for n, _ in done)


def test_in_process_progress_counts_every_seed() -> None:
    done: list[tuple[int, int]] = []
    sweep(_scenario, range(3), run=_call_f, progress=lambda n, total: done.append((n, total)))
    assert done == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("jobs", [None, 2])
def test_a_load_error_ends_the_sweep(tmp_path: Path, jobs: int | None) -> None:
    make = functools.partial(_seedy, str(tmp_path / "missing"))
    with pytest.raises(LoadError, match="missing"):
        sweep(make, range(4), jobs=jobs)


def test_an_unexpected_exception_propagates() -> None:
    with pytest.raises(ValueError, match="a bug at seed 0"):
        sweep(_refuse, range(3))


@pytest.mark.parametrize(("seeds", "jobs", "words"), [
    ([], None, "at least one seed"),
    (range(2), 0, "at least one job"),
])
def test_bad_arguments(seeds: list[int] | range, jobs: int | None, words: str) -> None:
    with pytest.raises(EmuError, match=words):
        sweep(_scenario, seeds, run=_call_f, jobs=jobs)


def test_without_ray_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)       # import ray raises ImportError
    with pytest.raises(EmuError, match=r"pip install 'kprobe-emu\[ray\]'"):
        sweep(_scenario, range(2), run=_call_f, ray="auto")


def test_a_local_ray_cluster_gives_the_in_process_result(guest_bin: Path) -> None:
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'kprobe-emu[ray]'")
    make = functools.partial(_seedy, str(guest_bin / "seedy"))
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        on_ray = sweep(make, range(6), ray="auto")
        with pytest.raises(LoadError, match="missing"):
            sweep(functools.partial(_seedy, str(guest_bin / "missing")), range(2), ray="auto")
    finally:
        ray.shutdown()
    assert on_ray == sweep(make, range(6))
