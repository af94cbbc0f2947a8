"""Kprobes and kretprobes on real compiled programs (issue #4).

Rules pinned:
- a kretprobe on a function of a real binary sees exactly as many entries and
  returns as the program makes: the oracle is the same program built with
  ``-finstrument-functions`` and run natively (guest/c/instrument.c counts);
- ``OBJECT:SYMBOL`` names (uprobes' convention) on an object not mapped yet make
  a pending probe that arms itself when the interpreter maps the object;
- a stripped binary is probed by address;
- the demo's story on a real binary: the return values a kretprobe sees are the
  errors the program reports.
"""

from __future__ import annotations

import errno
import io
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from emu import Machine
from probes import (
    Kprobe,
    Kretprobe,
    ProbeError,
    register_kprobe,
    register_kretprobe,
    regs_get_kernel_argument,
    regs_return_value,
    unregister_kprobe,
)
from probes._pending import is_pending
from tests.guests import guest_bin as _guest_bin

# program -> arguments of the runs compared with the oracle
CALL_COUNT_RUNS = {
    "fib": ["15"],
    "ackermann": ["2", "3"],
    "quicksort": ["300"],
    "strings": [],
    "parse": ["80", "x", "", "70000", "443"],
}


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


def _oracle(binary: Path, args: list[str]) -> dict[str, tuple[int, int]]:
    """Entries and exits per function, from the natively run -finstrument-functions build."""
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, env={}, timeout=60)
    with open(binary, "rb") as f:
        names = {s["st_value"]: s.name for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols()
                 if s["st_info"]["type"] == "STT_FUNC"}
    counts = {}
    for line in done.stderr.splitlines():
        addr, enters, exits = line.split()
        counts[names[int(addr, 16)]] = (int(enters), int(exits))
    return counts


def _count_with_kretprobes(binary: Path, args: list[str], functions: list[str]) -> dict[str, tuple[int, int]]:
    m = Machine.from_elf(str(binary), [binary.name, *args])
    m.stdout = io.BytesIO()
    entries: Counter[str] = Counter()
    returns: Counter[str] = Counter()
    probes = []
    for name in functions:
        rp = Kretprobe(symbol_name=name, maxactive=1000,
                       entry_handler=lambda ri, regs: entries.update([ri.rp.kp.symbol_name]),
                       handler=lambda ri, regs: returns.update([ri.rp.kp.symbol_name]))
        register_kretprobe(m, rp)
        probes.append(rp)
    m.run()
    assert [rp.nmissed for rp in probes] == [0] * len(probes)
    return {name: (entries[name], returns[name]) for name in functions}


@pytest.mark.parametrize("flavour", ["static", "dyn"])
@pytest.mark.parametrize("prog", list(CALL_COUNT_RUNS))
def test_kretprobe_call_counts_match_instrumented_build(guest_bin: Path, prog: str, flavour: str) -> None:
    """Entries and returns seen by kretprobes == the -finstrument-functions counts."""
    args = CALL_COUNT_RUNS[prog]
    oracle = _oracle(guest_bin / f"{prog}.instr", args)
    assert len(oracle) >= 2 and all(n > 0 for n, _ in oracle.values())
    seen = _count_with_kretprobes(guest_bin / f"{prog}.{flavour}", args, sorted(oracle))
    assert seen == oracle


def test_pending_kretprobe_on_libc_malloc(guest_bin: Path) -> None:
    """'libc.so.6:malloc' before libc is mapped: pending, then armed by the mapping."""
    m = Machine.from_elf(str(guest_bin / "strings.dyn"))
    m.stdout = io.BytesIO()
    calls = Counter[str]()
    sizes: list[int] = []

    def entry(ri, regs):  # type: ignore[no-untyped-def]
        calls["entry"] += 1
        sizes.append(regs_get_kernel_argument(regs, 0))
        calls[m.symbolize(regs.rip)] += 1

    rp = Kretprobe(symbol_name="libc.so.6:malloc", entry_handler=entry,
                   handler=lambda ri, regs: calls.update(["return"]))
    register_kretprobe(m, rp)
    assert is_pending(m, rp) and not rp.kp.registered
    assert m.run() == 5
    assert not is_pending(m, rp) and rp.kp.registered
    assert rp.kp.addr == m.symbols["libc.so.6:malloc"]
    assert calls["entry"] == calls["return"] == calls["libc.so.6:malloc+0x0"] >= 50
    assert 1 << 20 in sizes                       # strings.c: malloc(1 << 20)
    assert m.stdout.getvalue().startswith(b"26 words, sorted:")


def test_pending_kprobe_unregistered_before_mapping_never_fires(guest_bin: Path) -> None:
    m = Machine.from_elf(str(guest_bin / "fib.dyn"), ["fib", "5"])
    m.stdout = io.BytesIO()
    hits = []
    kp = Kprobe(symbol_name="libc.so.6:printf", pre_handler=lambda kp, regs: hits.append(1))
    register_kprobe(m, kp)
    with pytest.raises(ProbeError) as info:
        register_kprobe(m, kp)
    assert info.value.errno == errno.EINVAL
    unregister_kprobe(m, kp)
    assert m.run() == 5 and hits == []


def test_pending_probe_on_a_missing_symbol_stops_the_run(guest_bin: Path) -> None:
    """The object appears without the symbol: the run raises ENOENT (not silently dropped)."""
    m = Machine.from_elf(str(guest_bin / "fib.dyn"))
    m.stdout = io.BytesIO()
    register_kprobe(m, Kprobe(symbol_name="libc.so.6:no_such_function"))
    with pytest.raises(ProbeError) as info:
        m.run()
    assert info.value.errno == errno.ENOENT


def test_probe_by_address_on_a_stripped_binary(guest_bin: Path, tmp_path: Path) -> None:
    """No symbols (only .eh_frame's sub_ADDR): a kprobe at fib's address counts its calls."""
    if shutil.which("strip") is None:
        pytest.skip("strip (binutils) is not installed")
    full = Machine.from_elf(str(guest_bin / "fib.static"))
    fib = full.symbols["fib"]
    stripped = tmp_path / "fib.stripped"
    subprocess.run(["strip", "-o", str(stripped), str(guest_bin / "fib.static")], check=True)
    m = Machine.from_elf(str(stripped), ["fib", "12"])
    m.stdout = io.BytesIO()
    assert "fib" not in m.symbols
    hits = []
    register_kprobe(m, Kprobe(addr=fib, pre_handler=lambda kp, regs: hits.append(regs.rdi)))
    assert m.run() == 144
    assert len(hits) == 2 * 233 - 1 and hits[0] == 12     # calls of fib(12): 2*fib(13)-1


def test_failing_function_returns_what_the_program_reports(guest_bin: Path) -> None:
    """The demo's story on a real binary: parse_port's errors, seen from a kretprobe."""
    inputs = ["80", "http", "", "65536", "0", "443"]
    m = Machine.from_elf(str(guest_bin / "parse.static"), ["parse", *inputs])
    m.stdout = io.BytesIO()
    seen = []

    def entry(ri, regs):  # type: ignore[no-untyped-def]
        arg = regs_get_kernel_argument(regs, 0)
        ri.data[:8] = arg.to_bytes(8, "little")

    def ret(ri, regs):  # type: ignore[no-untyped-def]
        arg = int.from_bytes(ri.data[:8], "little")
        seen.append((m.read(arg, 16).split(b"\0")[0].decode(), regs_return_value(regs)))

    register_kretprobe(m, Kretprobe(symbol_name="parse_port", entry_handler=entry, handler=ret,
                                    data_size=8))
    assert m.run() == 4
    assert seen == [("80", 80), ("http", -errno.EINVAL), ("", -errno.EINVAL),
                    ("65536", -errno.ERANGE), ("0", -errno.ERANGE), ("443", 443)]
    printed = [line.split()[-1] for line in m.stdout.getvalue().decode().splitlines()]
    assert printed == [str(ret) for _arg, ret in seen]


def test_a_return_probe_on_the_programs_entry_point_is_einval(guest_bin: Path) -> None:
    """The kernel jumps to _start: [rsp] there is argc, not a return address, and
    hijacking it would change what the program computes (make fuzz found it). A
    kprobe there is fine."""
    m = Machine.from_elf(str(guest_bin / "fib.static"), ["fib", "5"])
    with pytest.raises(ProbeError, match="entry point") as info:
        register_kretprobe(m, Kretprobe("_start"))
    assert info.value.errno == errno.EINVAL
    hits: list[int] = []
    register_kprobe(m, Kprobe("_start", pre_handler=lambda kp, regs: hits.append(1)))
    assert m.run() == 5 and hits == [1]
