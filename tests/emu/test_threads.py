"""Guest threads of ELF programs (``guest/c/threads.c``) on the seeded scheduler.

Rules pinned (issue #8): ``pthread_create`` (clone, with clone3 refused so the C
library falls back), mutexes, condition variables, barriers and joins (futex)
work for static and dynamic glibc programs and give the native output for every
seed; a deadlock is reported, not a hang; a futex timeout is virtual time; a
thread that exits inside a kretprobed function leaves no instance behind; the
last thread out ends the process with its status.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from emu import GuestFault, Machine
from kprobe_emu.cli import main
from probes import Kretprobe, register_kretprobe
from tests.guests import run_emulated, run_native

FLAVOURS = ("threads.static", "threads.dyn")


def _load(guest_bin: Path, flavour: str, *args: str, seed: int = 0, timeslice: int = 1000) -> Machine:
    path = str(guest_bin / flavour)
    m = Machine.from_elf(path, [path, *args], seed=seed, timeslice=timeslice)
    m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
    return m


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_joined_threads_print_what_they_print_natively_for_every_seed(guest_bin: Path, flavour: str) -> None:
    argv = [str(guest_bin / flavour), "join", "5"]
    native = run_native(argv)
    assert native[0] == 0
    for seed in range(4):
        assert run_emulated(argv, seed=seed, timeslice=200) == native


def test_threads_interleave_and_a_seed_replays_its_interleaving(guest_bin: Path) -> None:
    """Which thread's fib returns when: the same for one seed, not for all seeds."""
    def order(seed: int) -> list[int]:
        m = _load(guest_bin, "threads.static", "join", "4", seed=seed, timeslice=300)
        tids: list[int] = []
        register_kretprobe(m, Kretprobe("fib", handler=lambda ri, regs: tids.append(ri.task.tid),
                                        maxactive=128))
        assert m.run() == 0
        return tids

    first = order(1)
    assert first == order(1)
    assert len(set(first)) == 4
    assert any(order(seed) != first for seed in (2, 3, 4))


def test_handlers_see_the_thread_that_entered(guest_bin: Path) -> None:
    m = _load(guest_bin, "threads.static", "join", "3", seed=5, timeslice=50)
    mismatched: list[tuple[int, int]] = []

    def ret(ri, regs):  # type: ignore[no-untyped-def]
        if m.current_task is not ri.task:
            mismatched.append((m.current_task.tid, ri.task.tid))

    rp = Kretprobe("fib", handler=ret, entry_handler=lambda ri, regs: 0, maxactive=200)
    register_kretprobe(m, rp)
    assert m.run() == 0
    assert mismatched == [] and rp.nunwound == 0 and rp.nfree == rp.maxactive


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_deadlock_is_reported_with_the_tasks_and_where_they_wait(guest_bin: Path, flavour: str) -> None:
    m = _load(guest_bin, flavour, "deadlock", seed=3)
    with pytest.raises(GuestFault, match="deadlock") as exc:
        m.run()
    assert exc.value.reason == "deadlock"
    message = str(exc.value)
    assert "task-1 (tid 1) blocked on futex 0x" in message and "(tid 2) blocked on futex" in message


def test_run_prints_the_deadlock_and_fails(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--seed", "2", str(guest_bin / "threads.static"), "deadlock"]) == 124
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "deadlock" in err and "Traceback" not in err


def test_a_condition_timeout_passes_in_virtual_time(guest_bin: Path) -> None:
    m = _load(guest_bin, "threads.static", "timedwait")
    assert m.run() == 0
    assert m.stdout.getvalue() == b"timedwait: ETIMEDOUT\n"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_thread_that_exits_inside_a_probed_function_leaves_no_instance(
        guest_bin: Path, flavour: str) -> None:
    """pthread_exit four frames deep in probed(): the four instances come back at
    the thread's end (rethook_flush_task), counted in nunwound, no handler runs."""
    m = _load(guest_bin, flavour, "exit-inside", seed=1)
    returns: list[int] = []
    rp = Kretprobe("probed", handler=lambda ri, regs: returns.append(1), maxactive=8)
    register_kretprobe(m, rp)
    assert m.run() == 0
    assert m.stdout.getvalue() == b"exit-inside: 42\n"
    assert (returns, rp.nmissed, rp.nunwound) == ([], 0, 4)
    assert rp.nfree == rp.maxactive


def test_the_last_thread_out_ends_the_process_with_its_status(guest_bin: Path) -> None:
    """main calls pthread_exit; its detached thread then calls exit(7)."""
    argv = [str(guest_bin / "threads.static"), "detached"]
    assert run_emulated(argv, seed=4) == run_native(argv) == (7, b"detached: fib(18) = 2584\n")


def test_sleep_is_virtual_time_and_lets_the_other_threads_run(guest_bin: Path) -> None:
    """usleep blocks the thread until the virtual clock passes the deadline: the
    poller sleeps 100 us at a time until the 2 ms sleeper wakes, as natively."""
    argv = [str(guest_bin / "threads.static"), "sleep"]
    assert run_emulated(argv, seed=3) == run_native(argv) == (0, b"sleep: raised after 10 or more polls\n")
    m = _load(guest_bin, "threads.static", "sleep", seed=3)
    assert m.run() == 0 and m.clock >= 2_000_000


def test_tids_are_unique_and_gettid_matches_the_task(guest_bin: Path) -> None:
    m = _load(guest_bin, "threads.static", "join", "6", seed=2, timeslice=100)
    assert m.run() == 0
    tids = [t.tid for t in m.tasks]
    assert len(tids) == len(set(tids)) == 7 and tids == sorted(tids)
    assert all(t.done for t in m.tasks)


def test_the_budget_names_the_thread(guest_bin: Path) -> None:
    m = _load(guest_bin, "threads.static", "join", "4", seed=0, timeslice=100)
    with pytest.raises(GuestFault, match=r"instruction budget of 300000 exhausted at .* in task-\d") as exc:
        m.run(max_insns=300_000)
    assert exc.value.reason == "insn-budget"
