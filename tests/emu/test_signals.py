"""Signal delivery to ELF guests (emu.linux._signal), against native runs.

Rules pinned (issue "Signals (ELF guests)"): a handler installed with
``rt_sigaction`` runs on an x86-64 ``rt_sigframe`` and returns through
``rt_sigreturn``; ``siginfo`` carries signo, code and pid (kill: SI_USER, raise:
SI_TKILL); ``sa_mask``, ``SA_NODEFER``, ``SA_RESETHAND``; a blocked signal stays
pending (``sigpending``) and is taken when unblocked; ``sigsuspend``/``pause`` wait
for a signal; faults reach the guest's handler with si_addr and si_code
(SEGV_MAPERR, SEGV_ACCERR, FPE_INTDIV) and ``siglongjmp`` recovers; ITIMER_REAL
runs on the virtual clock; default actions end the process with 128 + signo or
ignore the signal; ``SA_ONSTACK`` runs on the ``sigaltstack``; ``tgkill`` reaches
its thread and a process-directed signal a thread that does not block it. Each
subcommand of guest/c/signals.c prints and exits exactly as natively.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from emu import GuestFault, Machine
from tests.guests import run_emulated, run_native

SUBCOMMANDS = ["handler", "siginfo", "mask", "resethand", "procmask", "suspend", "pause", "segv",
               "fpe", "alarm", "term", "abort", "chld", "altstack", "threads"]


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_signal_scenario_matches_native(guest_bin: Path, sub: str) -> None:
    """Same stdout and exit status as the native run, for each scenario."""
    argv = [str(guest_bin / "signals.static"), sub]
    native = run_native(argv)
    emulated = run_emulated(argv)
    assert emulated[1].decode(errors="replace") == native[1].decode(errors="replace")
    assert emulated[0] == native[0], f"exit status: emulated {emulated[0]}, native {native[0]}"


@pytest.mark.parametrize(("sub", "status"), [("term", 143), ("abort", 134), ("resethand", 138),
                                             ("chld", 0)])
def test_default_actions_end_with_128_plus_signo(guest_bin: Path, sub: str, status: int) -> None:
    """SIGTERM terminates (143), abort's SIGABRT dumps core (134), SIGCHLD is ignored."""
    assert run_emulated([str(guest_bin / "signals.static"), sub])[0] == status


def _run(guest_bin: Path, sub: str, seed: int = 0) -> tuple[int, bytes, int]:
    m = Machine.from_elf(str(guest_bin / "signals.static"), ["signals", sub], seed=seed)
    m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
    status = m.run(timeout=60)
    return status, m.stdout.getvalue(), m.clock


def test_alarm_fires_on_the_virtual_clock_deterministically(guest_bin: Path) -> None:
    """A spin loop ended by SIGALRM from setitimer(1 ms): the virtual clock reaches
    the deadline (1 ms = 10**6 instructions) and the same seed gives the same run."""
    first = _run(guest_bin, "alarm")
    assert first[:2] == (0, b"alarm fired after spinning: 1\n")
    assert first[2] >= 1_000_000
    assert _run(guest_bin, "alarm") == first


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_thread_signals_for_every_seed(guest_bin: Path, seed: int) -> None:
    """tgkill reaches its thread; kill reaches the thread that does not block it,
    whatever the interleaving."""
    status, out, _ = _run(guest_bin, "threads", seed)
    assert (status, out) == (0, b"tgkill: in worker=1\nkill: in worker=1\n")


def test_a_fault_without_a_handler_still_ends_the_run(guest_bin: Path) -> None:
    """No SIGSEGV handler: the run ends with the GuestFault, as before signals."""
    m = Machine.from_elf(str(guest_bin / "signals.static"), ["signals", "segv"])
    m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
    m.kernel.signals.set_action = lambda sig, act: None      # type: ignore[method-assign, union-attr]
    with pytest.raises(GuestFault) as err:
        m.run(timeout=60)
    assert err.value.reason == "unmapped"
