"""A pthread worker pool (guest/c/pool.c) on the emulator's scheduler: threads
made by clone, a mutex and a condition variable on futexes, joins.

Rules pinned: for every seed and timeslice the program prints what the native run
prints (results in job order, per-worker totals); kretprobes on its functions see,
per thread, exactly the entries and returns the natively run
``-finstrument-functions`` build counts (c/instrument_mt.c, per thread, labelled by
worker index: job i is worker i % N's, so the counts do not depend on the
schedule); each return handler runs on the thread that entered; nothing is missed
or left in flight. Odd workers end by pthread_exit() inside retire(): those frames
(retire, worker) never return, natively nor under probes, and their instances
are reclaimed when the thread exits (``rp.nunwound``). With "abandon", main
returns (exit_group) while every worker waits inside queue_take(): those
instances are reclaimed when the process ends.
"""

from __future__ import annotations

import io
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from emu import Machine
from probes import Kprobe, Kretprobe, KretprobeInstance, PtRegs, register_kprobe, register_kretprobe
from tests.guests import run_native

FUNCTIONS = ("main", "worker", "queue_push", "queue_take", "run_job", "fib", "tree", "retire")
# (seed, timeslice, argv tail): 8 seeds, small slices so that threads interleave.
RUNS = [(0, 50, ["4", "12", "12"]), (1, 200, ["4", "12", "12"]), (2, 40, ["2", "5", "10"]),
        (3, 1000, ["8", "16", "8"]), (4, 97, ["3", "9", "11"]), (5, 400, ["1", "4", "9"]),
        (6, 31, ["16", "20", "6"]), (7, 150, ["5", "0", "5"]),
        (8, 60, ["3", "7", "10", "abandon"]), (9, 500, ["6", "3", "9", "abandon"])]


def _emulated(binary: Path, args: list[str], seed: int, timeslice: int) -> Machine:
    m = Machine.from_elf(str(binary), [binary.name, *args], seed=seed, timeslice=timeslice)
    m.stdout = io.BytesIO()
    m.stderr = io.BytesIO()
    return m


@pytest.mark.parametrize(("seed", "timeslice", "args"), RUNS)
def test_output_matches_native(guest_bin: Path, seed: int, timeslice: int,
                               args: list[str]) -> None:
    """Unprobed: status and stdout equal the native run's, whatever the schedule."""
    binary = guest_bin / "pool.static"
    m = _emulated(binary, args, seed, timeslice)
    status = m.run(timeout=120)
    assert (status, m.stdout.getvalue()) == run_native([str(binary), *args])


def _instrumented_counts(binary: Path, args: list[str]) -> dict[tuple[int, str], tuple[int, int]]:
    """(thread label, function) -> (entries, exits) from the native instrumented run."""
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, env={},
                          timeout=60, check=True)
    with open(binary, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        names = {s["st_value"]: s.name for s in symtab.iter_symbols()
                 if s["st_info"]["type"] == "STT_FUNC"}
    counts: dict[tuple[int, str], tuple[int, int]] = {}
    for line in done.stderr.splitlines():
        label, addr, enters, exits = line.split()
        key = (int(label), names[int(addr, 16)])
        e, x = counts.get(key, (0, 0))
        counts[key] = (e + int(enters), x + int(exits))
    return counts


@pytest.mark.parametrize(("seed", "timeslice", "args"), [RUNS[0], RUNS[2], RUNS[6], RUNS[8]])
def test_per_thread_calls_match_the_instrumented_build(guest_bin: Path, seed: int,
                                                       timeslice: int, args: list[str]) -> None:
    """Kretprobes on every function of the program count entries and returns per
    thread (labelled by the worker index the thread's worker() got; -1 for main):
    the same table as the -finstrument-functions build run natively."""
    oracle = _instrumented_counts(guest_bin / "pool.instr", args)
    nworkers, abandon = int(args[0]), "abandon" in args
    assert {"main", "worker", "queue_take", "fib"} <= {name for _label, name in oracle} <= set(FUNCTIONS)
    m = _emulated(guest_bin / "pool.static", args, seed, timeslice)
    label: dict[int, int] = {}          # tid -> worker index
    enters, exits = Counter[tuple[int, str]](), Counter[tuple[int, str]]()
    wrong: list[str] = []
    order: list[int] = []               # tids at run_job entries: did threads interleave?

    def on_worker(kp: Kprobe, regs: PtRegs) -> int:
        label[m.current_task.tid] = regs.rdi
        return 0

    def entry(name: str) -> Callable[[KretprobeInstance, PtRegs], int]:
        def handler(ri: KretprobeInstance, regs: PtRegs) -> int:
            enters[(m.current_task.tid, name)] += 1
            if name == "fib":
                order.append(m.current_task.tid)
            return 0
        return handler

    def ret(name: str) -> Callable[[KretprobeInstance, PtRegs], None]:
        def handler(ri: KretprobeInstance, regs: PtRegs) -> None:
            if ri.task is not m.current_task:
                wrong.append(f"{name}: entered on {ri.task}, returned on {m.current_task}")
            exits[(m.current_task.tid, name)] += 1
        return handler

    register_kprobe(m, Kprobe("worker", pre_handler=on_worker))
    rps = [Kretprobe(name, handler=ret(name), entry_handler=entry(name), maxactive=400)
           for name in FUNCTIONS]
    for rp in rps:
        register_kretprobe(m, rp)
    status = m.run(timeout=120)
    assert (status, m.stdout.getvalue()) == run_native([str(guest_bin / "pool.static"), *args])
    seen: dict[tuple[int, str], tuple[int, int]] = {}
    for tid, name in enters.keys() | exits.keys():
        key = (label.get(tid, -1), name)
        e, x = seen.get(key, (0, 0))
        seen[key] = (e + enters[(tid, name)], x + exits[(tid, name)])
    assert seen == oracle
    assert wrong == []
    # Frames that never return: every worker's worker() and queue_take() at the
    # exit_group; else the odd workers' worker() and retire() (pthread_exit).
    unwound = ({"worker": nworkers, "queue_take": nworkers} if abandon
               else {"worker": nworkers // 2, "retire": nworkers // 2})
    for rp in rps:
        assert rp.nmissed == 0
        assert rp.nunwound == unwound.get(rp.symbol_name or "", 0), rp
        assert rp.nfree == rp.maxactive
    if len(label) > 1:
        assert sum(a != b for a, b in zip(order, order[1:], strict=False)) > 2 * len(label)   # interleaved
