"""Pending probes by any name of their object, and the ones that never arm (issue 11).

Rules pinned:
- ``OBJECT:SYMBOL`` arms when an object of that name is mapped, whichever of
  its names ``OBJECT`` is: short name (``libc``, bpftrace's), base name, soname,
  full path; the armed probe sits where ``libc.so.6:malloc`` is and counts
  what the unprobed name counts;
- a probe whose object never comes stays pending: ``pending_probes`` says so
  with the objects that were mapped, ``list_probes`` shows it ``[PENDING]``;
- an object that comes without the symbol stops the run with ENOENT and a
  sentence naming both;
- a C++ function is probed by its demangled name.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest

from emu import Machine
from probes import Kprobe, Kretprobe, ProbeError, list_probes, register_kprobe, register_kretprobe
from probes._pending import is_pending, pending_probes
from tests.guests import guest_bin as _guest_bin


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


def _malloc_calls(guest_bin: Path, symbol: str) -> tuple[Machine, Kprobe, int]:
    m = Machine.from_elf(str(guest_bin / "strings.dyn"))
    m.stdout = io.BytesIO()
    hits = []
    kp = Kprobe(symbol_name=symbol, pre_handler=lambda kp, regs: hits.append(regs.rip))
    register_kprobe(m, kp)
    assert is_pending(m, kp)
    assert m.run() == 5
    return m, kp, len(hits)


def test_every_name_of_libc_arms_the_same_probe(guest_bin: Path) -> None:
    m, kp, reference = _malloc_calls(guest_bin, "libc.so.6:malloc")
    assert reference >= 50 and kp.addr == m.symbols["libc.so.6:malloc"]
    libc = m.objects.find("libc.so.6")
    assert libc is not None
    for name in ("libc", libc.path, os.path.realpath(libc.path)):
        m2, kp2, hits = _malloc_calls(guest_bin, f"{name}:malloc")
        assert kp2.registered and not is_pending(m2, kp2)
        assert (kp2.addr, hits) == (m2.symbols["libc.so.6:malloc"], reference), name


def test_a_probe_whose_object_never_comes_is_reported(guest_bin: Path) -> None:
    m = Machine.from_elf(str(guest_bin / "fib.dyn"), ["fib", "5"])
    m.stdout = io.BytesIO()
    rp = Kretprobe(symbol_name="libcc:malloc")
    kp = Kprobe(symbol_name="libm:sin")
    register_kretprobe(m, rp)
    register_kprobe(m, kp)
    assert m.run() == 5
    assert pending_probes(m) == [
        (rp, "no mapped object matches 'libcc'; mapped: fib.dyn, ld-linux-x86-64.so.2, libc.so.6"),
        (kp, "no mapped object matches 'libm'; mapped: fib.dyn, ld-linux-x86-64.so.2, libc.so.6"),
    ]
    assert list_probes(m).splitlines()[-2:] == [
        "0000000000000000  r  libcc:malloc  [PENDING]",
        "0000000000000000  k  libm:sin  [PENDING]",
    ]


def test_an_object_without_the_symbol_stops_the_run_with_a_sentence(guest_bin: Path) -> None:
    m = Machine.from_elf(str(guest_bin / "fib.dyn"))
    m.stdout = io.BytesIO()
    register_kprobe(m, Kprobe(symbol_name="libc:mallocx"))
    with pytest.raises(ProbeError) as info:
        m.run()
    assert info.value.errno == errno.ENOENT
    assert "probe on libc:mallocx never armed: no symbol 'mallocx' in libc.so.6" in str(info.value)
    assert pending_probes(m) == []


def test_a_registered_probe_is_not_pending(guest_bin: Path) -> None:
    m = Machine.from_elf(str(guest_bin / "fib.static"))
    register_kprobe(m, Kprobe(symbol_name="fib"))
    assert pending_probes(m) == [] and "[PENDING]" not in list_probes(m)


def test_cxx_function_probed_by_its_demangled_name(guest_bin: Path) -> None:
    """``middle(long)`` and ``middle`` name ``_Z6middlel``; list_probes says ``middle(long)``."""
    calls = {}
    for name in ("_Z6middlel", "middle(long)", "middle"):
        m = Machine.from_elf(str(guest_bin / "throw.static"))
        m.stdout = io.BytesIO()
        hits: list[int] = []
        register_kprobe(m, Kprobe(symbol_name=name, pre_handler=lambda kp, regs, hits=hits: hits.append(1)))
        assert "  middle(long)+0x0" in list_probes(m)
        assert m.run() == 0
        calls[name] = len(hits)
    assert set(calls.values()) == {4}, calls          # rethrower(1..4) each reach middle once
