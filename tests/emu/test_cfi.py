"""The ``.eh_frame`` unwinder (emu/_cfi.py, emu/_unwind.py) under ``stack_trace``.

Rules pinned:
- the CFI rows read from ``.eh_frame`` are readelf's (``readelf -wF``) at every
  row of every FDE of a static -O2 glibc program (differential; a rule the
  unwinder cannot follow reads as unsupported on both sides);
- in code built ``-O2 -fomit-frame-pointer`` (guest/c/o2stack.c, static and
  dynamic) ``stack_trace`` at a kprobe on a leaf's entry, on an instruction in
  the middle of a function, and on a comparator that libc's ``qsort`` calls is
  gdb's backtrace frame for frame (same object, same offset, same function
  name), past ``main`` up to ``_start``; gdb's inline and tail-call frames are
  not stack frames and are left out. Kretprobes on the callers hijack their
  return addresses meanwhile: the trace shows the real ones;
- without gdb: the program's functions in the trace are the call chain that the
  ``-finstrument-functions`` build records at the function's first entry;
- a return handler's trace is the trace of a kprobe at its return address;
- code without CFI (assembled) unwinds by frame pointer; the return address
  is read at ``rsp`` only at a probe hit on a function's entry, never in a return
  handler, not even when the return site carries a label (the bug this fixes).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

import guest
from emu import Machine
from emu._cfi import DWARF_RA, DWARF_RBP, DWARF_RSP, CfaRow, FdeTable, _cached_table, cfa_row
from emu._unwind import follows_call, unwind
from probes import (
    Kprobe,
    Kretprobe,
    register_kprobe,
    register_kretprobe,
    set_optimization,
    stack_trace,
)
from probes._core import get_manager
from probes._kretprobe import KretprobeInstance
from probes._regs import PtRegs
from probes._report import _in_return_handler

FUNCTIONS = ("inner", "middle", "by_weight", "outer", "main")   # guest/c/o2stack.c
FLAVOURS = ("static", "dyn")
# location -> the function whose first entry the instrumented build reports there
LOCATIONS = {"inner": "inner", "middle.ret": "middle", "by_weight": "by_weight"}

Frame = tuple[str, int, str]        # object, offset from its lowest page, function


@dataclass
class Run:
    """First-hit traces of one emulated run of o2stack."""

    specs: dict[str, str]                 # location -> gdb breakpoint spec
    traces: dict[str, list[Frame]]        # location -> stack_trace at its first hit
    returned: list[Frame]                 # in inner's first return handler


def _frame(m: Machine, addr: int) -> Frame:
    obj = m.objects.object_at(addr)
    name = m.symbolize(addr).split("+")[0].split(":")[-1]
    return (obj.name, addr - obj.start, name) if obj is not None else ("?", addr, name)


def _first_return_site(m: Machine, func: str) -> int:
    """The address after ``func``'s first call instruction."""
    start = m.symbols[func]
    for insn in Cs(CS_ARCH_X86, CS_MODE_64).disasm(m.read(start, 256), start):
        if insn.mnemonic == "call":
            return insn.address + insn.size
    raise AssertionError(f"no call in {func}")


def _emulate(binary: Path) -> Run:
    m = Machine.from_elf(str(binary), [binary.name])
    m.stdout = io.BytesIO()
    ret_site = _first_return_site(m, "middle")
    where = {"inner": m.symbols["inner"], "middle.ret": ret_site, "by_weight": m.symbols["by_weight"]}
    traces: dict[str, list[Frame]] = {}
    returned: list[Frame] = []

    def record(location: str) -> Callable[[Kprobe, PtRegs], int]:
        def pre(kp: Kprobe, regs: PtRegs) -> int:
            if location not in traces:
                traces[location] = [_frame(m, a) for a in stack_trace(m, regs)]
            return 0
        return pre

    def on_return(ri: KretprobeInstance, regs: PtRegs) -> None:
        if not returned:
            returned.extend(_frame(m, a) for a in stack_trace(m, regs))

    for location, addr in where.items():
        register_kprobe(m, Kprobe(addr=addr, pre_handler=record(location)))
    register_kretprobe(m, Kretprobe("inner", handler=on_return))
    for caller in ("middle", "outer", "by_weight"):     # hijacked frames on the way
        register_kretprobe(m, Kretprobe(caller))
    assert m.run() == 0
    specs = {"inner": "*inner", "by_weight": "*by_weight",
             "middle.ret": f"*((char *) middle + {ret_site - m.symbols['middle']})"}
    return Run(specs, traces, returned)


@pytest.fixture(scope="module")
def runs(guest_bin: Path) -> dict[str, Run]:
    return {flavour: _emulate(guest_bin / f"o2stack.{flavour}") for flavour in FLAVOURS}


# --- the CFI rows, against readelf ---------------------------------------------------------
_READELF_OFFSET = re.compile(r"c([+-]\d+)$")
_READELF_CFA = re.compile(r"(rsp|rbp)\+(\d+)$")
_READELF_TOKEN = re.compile(r"r\d+ \([^)]*\)|\S+")    # "r9 (r9)": a register rule


def _readelf_rule(text: str | None) -> int | None:
    """A register column of ``readelf -wF``: an offset, or None (no rule).

    Raises:
        ValueError: another rule (an expression, a register).
    """
    if text is None or text in ("u", "s"):
        return None
    found = _READELF_OFFSET.match(text)
    if found is None:
        raise ValueError(text)
    return int(found.group(1))


def _readelf_row(pc: int, cfa: str, regs: dict[str, str]) -> CfaRow | None:
    found = _READELF_CFA.match(cfa)
    try:
        ra, rbp = _readelf_rule(regs.get("ra")), _readelf_rule(regs.get("rbp"))
    except ValueError:
        return None
    if found is None:
        return None
    reg = DWARF_RSP if found.group(1) == "rsp" else DWARF_RBP
    return CfaRow(pc, reg, int(found.group(2)), ra, rbp)


def _readelf_fdes(path: Path) -> list[tuple[int, int, list[tuple[int, CfaRow | None]]]]:
    """``(start, end, [(pc, row)...])`` of each FDE (an FDE without rows has its
    CIE's); ``None`` for a row with a rule the unwinder does not follow."""
    text = subprocess.run(["readelf", "-wF", str(path)], capture_output=True, text=True,
                          check=True).stdout
    cie_rows: dict[str, list[tuple[int, str, dict[str, str]]]] = {}
    fdes: list[tuple[int, int, list[tuple[int, CfaRow | None]]]] = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").splitlines()
        head = lines[0].split() if lines else []
        if len(head) < 4 or head[3] not in ("CIE", "FDE"):
            continue
        rows = []
        if len(lines) > 1:
            columns = lines[1].split()[2:]
            for line in lines[2:]:
                loc, cfa, *values = _READELF_TOKEN.findall(line)
                rows.append((int(loc, 16), cfa, dict(zip(columns, values, strict=True))))
        if head[3] == "CIE":
            cie_rows[head[0]] = rows
            continue
        start, end = (int(x, 16) for x in head[5].removeprefix("pc=").split(".."))
        if not rows:
            rows = [(start, cfa, regs) for _pc, cfa, regs in cie_rows[head[4].removeprefix("cie=")][-1:]]
        fdes.append((start, end, [(pc, _readelf_row(pc, cfa, regs)) for pc, cfa, regs in rows]))
    return fdes


def _in_force(rows: list[tuple[int, CfaRow | None]], pc: int) -> CfaRow | None:
    return [row for start, row in rows if start <= pc][-1]


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) is not installed")
def test_cfi_rows_are_readelfs(guest_bin: Path) -> None:
    binary = guest_bin / "o2stack.static"
    st = os.stat(binary)
    table = _cached_table((str(binary), st.st_mtime_ns, st.st_size))
    assert isinstance(table, FdeTable)
    fdes = _readelf_fdes(binary)
    assert len(fdes) == len(table) > 1000
    unsupported = 0
    for start, end, rows in fdes:
        rows[0] = (start, rows[0][1])           # a CIE's row is at 0
        ours = table.rows_of(table.starts.index(start))
        for pc in sorted({*(pc for pc, _row in rows), *(row.pc for row in ours)}):
            if not start <= pc < end:
                continue
            expect, got = _in_force(rows, pc), table.row_at(pc)
            assert got is not None
            if expect is None:
                unsupported += 1
                assert not got.supported, f"{pc:#x}: {got}"
            else:
                assert got._replace(pc=0) == expect._replace(pc=0), f"{pc:#x}"
    assert unsupported > 0            # signal frames, PLT-like stubs: expressions


def test_cfa_row_at_a_leaf_and_after_pushes(guest_bin: Path) -> None:
    """At entry the CFA is rsp + 8 and the return address at CFA - 8; after
    ``push r12; push rbp; push rbx`` it is rsp + 32, and rbp is at CFA - 24."""
    m = Machine.from_elf(str(guest_bin / "o2stack.static"))
    entry = cfa_row(m, m.symbols["inner"])
    assert entry is not None and entry[1:] == (DWARF_RSP, 8, -8, None)
    row = cfa_row(m, _first_return_site(m, "middle"))
    assert row is not None and (row.cfa_reg, row.cfa_offset, row.ra_offset) == (DWARF_RSP, 32, -8)
    assert row.rbp_offset is not None and row.rbp_offset < -8
    assert DWARF_RA == 16


def test_assembled_code_has_no_cfi() -> None:
    m = Machine.from_asm("f:\n    ret\n")
    assert cfa_row(m, m.symbols["f"]) is None


# --- stack traces in -O2 code, against gdb ---------------------------------------------------
GDB_SCRIPT = '''
import os
import gdb

def mappings():
    out = []
    for line in gdb.execute("info proc mappings", to_string=True).splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].startswith("0x") and parts[-1].startswith("/"):
            out.append((int(parts[0], 16), int(parts[1], 16), os.path.realpath(parts[-1])))
    return out

def where(pc, maps):
    for lo, hi, path in maps:
        if lo <= pc < hi:
            low = min(start for start, _end, other in maps if other == path)
            return "%s %d" % (os.path.basename(path), pc - low)
    return "? %d" % pc

class First(gdb.Breakpoint):
    def __init__(self, location, spec):
        super().__init__(spec)
        self.where, self.done = location, False

    def stop(self):
        if not self.done:
            self.done, maps = True, mappings()
            frame = gdb.newest_frame()
            while frame is not None:
                if frame.type() not in (gdb.INLINE_FRAME, gdb.TAILCALL_FRAME):
                    print("FRAME", self.where, where(frame.pc(), maps), frame.name())
                frame = frame.older()
        return False

gdb.execute("set backtrace past-main on")
for location, spec in SPECS.items():
    First(location, spec)
gdb.execute("run")
'''

def _gdb_frames(binary: Path, specs: dict[str, str], tmp: Path) -> dict[str, list[Frame]]:
    """gdb's frames at the first hit of each breakpoint, on the native program."""
    script = tmp / "frames.py"
    script.write_text(f"SPECS = {specs!r}\n{GDB_SCRIPT}")
    done = subprocess.run(["gdb", "-nx", "-batch", "-iex", "set debuginfod enabled off",
                           "-x", str(script), str(binary)], capture_output=True, text=True, timeout=60)
    frames: dict[str, list[Frame]] = {}
    for line in done.stdout.splitlines():
        if line.startswith("FRAME "):
            _tag, location, obj, offset, name = line.split()
            frames.setdefault(location, []).append((obj, int(offset), name))
    if not frames:        # e.g. no ptrace in this container
        pytest.skip(f"gdb could not run {binary.name}:\n{done.stdout}{done.stderr}")
    return frames


@pytest.fixture(scope="module")
def gdb_frames(guest_bin: Path, runs: dict[str, Run],
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[Frame]]]:
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed")
    return {flavour: _gdb_frames(guest_bin / f"o2stack.{flavour}", runs[flavour].specs,
                                 tmp_path_factory.mktemp("gdb"))
            for flavour in FLAVOURS}


@pytest.mark.parametrize("location", LOCATIONS)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_stack_trace_is_gdbs_backtrace(runs: dict[str, Run], gdb_frames: dict[str, dict[str, list[Frame]]],
                                       flavour: str, location: str) -> None:
    expect = gdb_frames[flavour][location]
    got = runs[flavour].traces[location]
    assert [(obj, off) for obj, off, _name in got] == [(obj, off) for obj, off, _name in expect]
    assert [name for _o, _off, name in got if name in FUNCTIONS] == \
        [name for _o, _off, name in expect if name in FUNCTIONS]
    assert expect[-1][2] == "_start"
    if location == "by_weight":       # unwound through qsort's frames in libc
        assert any(obj.startswith("libc") for obj, _off, _name in got) == (flavour == "dyn")


def _instrumented_chains(binary: Path) -> dict[str, list[str]]:
    """The call chain at each function's first entry, from the -finstrument-functions build."""
    done = subprocess.run([str(binary)], capture_output=True, text=True, env={}, timeout=60)
    with open(binary, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        names = {s["st_value"]: s.name for s in symtab.iter_symbols() if s["st_info"]["type"] == "STT_FUNC"}
    chains: dict[str, list[str]] = {}
    for line in done.stderr.splitlines():
        chain = [names[int(addr, 16)] for addr in line.split()[1:]]
        chains.setdefault(chain[0], chain)
    return chains


@pytest.mark.parametrize("location", LOCATIONS)
def test_stack_trace_is_the_instrumented_call_chain(guest_bin: Path, runs: dict[str, Run],
                                                    location: str) -> None:
    chains = _instrumented_chains(guest_bin / "o2stack.chain")
    got = runs["static"].traces[location]
    assert [name for _o, _off, name in got if name in FUNCTIONS] == chains[LOCATIONS[location]]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_return_handler_trace_is_the_return_sites(runs: dict[str, Run], flavour: str) -> None:
    """inner's first return lands on middle's first return site: its handler's
    trace is the kprobe's there, and the entry trace without its first frame."""
    run = runs[flavour]
    assert run.returned == run.traces["middle.ret"] == run.traces["inner"][1:]


# --- code without CFI: frame pointers ---------------------------------------------------------
FRAMED = """
top:
    push rbp
    mov rbp, rsp
    call mid
    pop rbp
    ret
mid:
    push rbp
    mov rbp, rsp
    call leaf
    pop rbp
    ret
leaf:
    push rbp
    mov rbp, rsp
    mov eax, 1
    pop rbp
    ret
"""


@pytest.mark.parametrize("offset", [0, 1, 4])
def test_frame_pointers_where_there_is_no_cfi(offset: int) -> None:
    """At entry (before and after ``push rbp``) and in the body: the same chain."""
    m = Machine.from_asm(FRAMED)
    traces = []

    def pre(kp: Kprobe, regs: PtRegs) -> int:
        traces.append([m.symbolize(a) for a in stack_trace(m, regs)])
        return 0

    register_kprobe(m, Kprobe("leaf", offset=offset, pre_handler=pre))
    m.call("top")
    assert traces == [[f"leaf+{offset:#x}", "mid+0x9", "top+0x9"]]


def test_the_entry_rule_applies_only_when_the_caller_says_so() -> None:
    """At a function's first instruction rbp is still the caller's: without
    ``at_entry`` the frame-pointer walk skips the caller (its frame is not set up yet)."""
    m = Machine.from_asm(FRAMED)
    seen = {}

    def pre(kp: Kprobe, regs: PtRegs) -> int:
        for at_entry in (True, False):
            seen[at_entry] = [m.symbolize(a) for a, _slot in
                              unwind(m, regs.rip, regs.rsp, regs.rbp, at_entry=at_entry)]
        return 0

    register_kprobe(m, Kprobe("leaf", pre_handler=pre))
    m.call("top")
    assert seen == {True: ["leaf+0x0", "mid+0x9", "top+0x9"], False: ["leaf+0x0", "top+0x9"]}


# The caller passes a function pointer on the stack, and its return site has a label.
LABELLED = """
top:
    push rbp
    mov rbp, rsp
    call caller
    pop rbp
    ret
caller:
    push rbp
    mov rbp, rsp
    lea rax, [rip + callee]
    push rax
    push rax
    call callee
caller_ret:
    add rsp, 16
    add eax, 1
    pop rbp
    ret
callee:
    push rbp
    mov rbp, rsp
    mov eax, 41
    pop rbp
    ret
"""


@pytest.mark.parametrize("optimized", [False, True])
def test_labelled_return_site_is_not_a_function_entry(optimized: bool) -> None:
    """A return handler's ``regs.rip`` is the return site ``caller_ret``, a symbol
    of its own; ``[rsp]`` there is the caller's data (here a pointer to
    ``callee``), not a return address. The trace is the one a kprobe at
    ``caller_ret`` takes; read as an entry it would show ``callee`` as a caller."""
    m = Machine.from_asm(LABELLED)
    set_optimization(m, optimized)
    traces: dict[str, list[str]] = {}
    in_return_handler: dict[str, bool] = {}

    def take(name: str, **kwargs: bool) -> Callable[[object, PtRegs], int]:
        def handler(_probe: object, regs: PtRegs) -> int:
            traces[name] = [m.symbolize(a) for a in stack_trace(m, regs, **kwargs)]
            in_return_handler[name] = _in_return_handler(m, get_manager(m))
            return 0
        return handler

    register_kretprobe(m, Kretprobe("callee", handler=take("return")))
    register_kretprobe(m, Kretprobe("caller"))          # caller's frame is hijacked too
    register_kprobe(m, Kprobe("caller_ret", pre_handler=take("kprobe")))
    register_kprobe(m, Kprobe("caller_ret", pre_handler=take("as entry", at_entry=True)))
    assert m.call("top") == 42
    assert traces == {
        "return": ["caller_ret+0x0", "top+0x9"],
        "kprobe": ["caller_ret+0x0", "top+0x9"],
        "as entry": ["caller_ret+0x0", "callee+0x0", "top+0x9"],
    }
    assert in_return_handler == {"return": True, "kprobe": False, "as entry": False}


def test_every_return_site_gcc_emits_follows_a_call(guest_bin: Path) -> None:
    """``follows_call`` knows every call form in a static glibc program (capstone
    decodes the reference); no function entry of the assembled guests is one."""
    m = Machine.from_elf(str(guest_bin / "o2stack.static"))
    with open(guest_bin / "o2stack.static", "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        assert text is not None
        start, size = text["sh_addr"], text["sh_size"]
    sites = [addr + length for addr, length, mnemonic, _ops
             in Cs(CS_ARCH_X86, CS_MODE_64).disasm_lite(m.read(start, size), start)
             if mnemonic == "call"]
    assert len(sites) > 1000
    assert [hex(a) for a in sites if not follows_call(m, a)] == []
    asm = guest.load("fib", "ackermann", "even_odd", "open_file", "kunit")
    targets = set()
    for name in asm.symbols:
        sym = asm.symbols.get_symbol(name)
        assert sym is not None
        for _addr, _len, mnemonic, ops in Cs(CS_ARCH_X86, CS_MODE_64).disasm_lite(
                asm.read(sym.addr, sym.size), sym.addr):
            if mnemonic == "call" and ops.startswith("0x"):
                targets.add(int(ops, 16))
    assert len(targets) > 5
    assert [asm.symbolize(a) for a in sorted(targets) if follows_call(asm, a)] == []
