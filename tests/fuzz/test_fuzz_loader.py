"""Fuzzing the ELF loader with mutated real binaries (``Machine.from_elf``, then ``run``).

Rule pinned: whatever the bytes of the file, loading it is a one-line
``emu.LoadError`` or a machine that runs; running that machine (200,000
instructions, 2 s) ends with an exit status or a ``GuestFault``; a kprobe on
``main`` (``count_args``, a stripped file's ``sub_*``, a library's pending
``libfz.so:fz_add``) whose handler unwinds the stack (``stack_trace``: the mutated
``.eh_frame``) registers or raises ``ProbeError``. Nothing else may come out, the
syscall layer may not meet a host error (a library is mapped by the guest's
ld.so), and the host may not crash, hang or grow past its memory bound (each case
runs in a child: :class:`tests.fuzz.conftest.Sandbox`).

The files: guest/bin/fib.static, fib.dyn, nolibc, a stripped nolibc, and a shared
library next to the intact program that needs it. Mutations are named by
structure rather than file offset (``phdr[PT_INTERP].p_filesz``,
``shdr[.eh_frame].sh_size``, ``.symtab[main].st_size``, bytes of a named section),
so a saved case means much the same on another toolchain's build: the ELF header,
the program header table, the ``PT_INTERP`` string, the section headers, the
symbol tables, ``.dynamic``, any named section's bytes, and truncation.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, reject
from hypothesis import strategies as st

from emu import GuestFault, LoadError, Machine
from probes import Kprobe, ProbeError, register_kprobe, stack_trace
from probes.events import ParseError
from tests.fuzz.conftest import GUEST_MEM_LIMIT, KnownBug, KnownBugHit, Sandbox, budget
from tests.guests import BIN_DIR, guest_bin

# --- ELF structure (elf.h) -------------------------------------------------------------------
EHDR_FIELDS = {     # name: (offset, size)
    "ei_class": (4, 1), "ei_data": (5, 1), "ei_version": (6, 1), "ei_osabi": (7, 1),
    "e_type": (16, 2), "e_machine": (18, 2), "e_version": (20, 4), "e_entry": (24, 8),
    "e_phoff": (32, 8), "e_shoff": (40, 8), "e_flags": (48, 4), "e_ehsize": (52, 2),
    "e_phentsize": (54, 2), "e_phnum": (56, 2), "e_shentsize": (58, 2), "e_shnum": (60, 2),
    "e_shstrndx": (62, 2),
}
PHDR_FIELDS = {"p_type": (0, 4), "p_flags": (4, 4), "p_offset": (8, 8), "p_vaddr": (16, 8),
               "p_paddr": (24, 8), "p_filesz": (32, 8), "p_memsz": (40, 8), "p_align": (48, 8)}
SHDR_FIELDS = {"sh_name": (0, 4), "sh_type": (4, 4), "sh_flags": (8, 8), "sh_addr": (16, 8),
               "sh_offset": (24, 8), "sh_size": (32, 8), "sh_link": (40, 4), "sh_info": (44, 4),
               "sh_addralign": (48, 8), "sh_entsize": (56, 8)}
SYM_FIELDS = {"st_name": (0, 4), "st_info": (4, 1), "st_other": (5, 1), "st_shndx": (6, 2),
              "st_value": (8, 8), "st_size": (16, 8)}
DYN_FIELDS = {"d_tag": (0, 8), "d_val": (8, 8)}
PT_NAMES = {0: "PT_NULL", 1: "PT_LOAD", 2: "PT_DYNAMIC", 3: "PT_INTERP", 4: "PT_NOTE", 6: "PT_PHDR",
            7: "PT_TLS", 0x6474E550: "PT_GNU_EH_FRAME", 0x6474E551: "PT_GNU_STACK",
            0x6474E552: "PT_GNU_RELRO", 0x6474E553: "PT_GNU_PROPERTY"}
DT_NAMES = {0: "DT_NULL", 1: "DT_NEEDED", 5: "DT_STRTAB", 6: "DT_SYMTAB", 7: "DT_RELA",
            10: "DT_STRSZ", 12: "DT_INIT", 13: "DT_FINI", 21: "DT_DEBUG", 23: "DT_JMPREL"}
SYMBOLS_OF_NOTE = ("main", "_start", "fib", "start_c", "count_args", "__libc_start_main")


class Layout:
    """Where the parts of one ELF file are: ``fields`` by structural name -> (offset,
    size), ``regions`` by name -> (offset, length), ``counts`` the entries of each
    table (``phdr``, ``shdr``, ``.symtab``, ``.dynsym``, ``.dynamic``). Not a
    dataclass: hypothesis would print its bytes with every failure."""

    def __init__(self, data: bytes, fields: dict[str, tuple[int, int]],
                 regions: dict[str, tuple[int, int]], counts: dict[str, int]) -> None:
        self.data, self.fields, self.regions, self.counts = data, fields, regions, counts
        self.companion: bytes | None = None     # a library's: the intact program that loads it

    def __repr__(self) -> str:
        return f"<Layout of {len(self.data)} bytes>"


def layout(data: bytes) -> Layout:
    """The structure of an intact ELF64 file (our own reading, not the loader's)."""
    fields = {f"ehdr.{k}": v for k, v in EHDR_FIELDS.items()}
    regions = {"file": (0, len(data)), "ehdr": (0, 64)}
    phoff, shoff = struct.unpack_from("<QQ", data, 32)
    phnum, shnum, shstrndx = struct.unpack_from("<H", data, 56)[0], *struct.unpack_from("<HH", data, 60)
    regions["phdrs"] = (phoff, phnum * 56)
    seen: dict[str, int] = {}
    for i in range(phnum):
        base = phoff + i * 56
        p_type, p_offset, p_filesz = (struct.unpack_from("<I", data, base)[0],
                                      *struct.unpack_from("<Q", data, base + 8),
                                      *struct.unpack_from("<Q", data, base + 32))
        kind = PT_NAMES.get(p_type, f"PT_{p_type:#x}")
        names = [f"phdr[{i}]", f"phdr[{kind}#{seen.get(kind, 0)}]"]
        if kind not in seen:
            names.append(f"phdr[{kind}]")
        seen[kind] = seen.get(kind, 0) + 1
        for name in names:
            fields.update({f"{name}.{k}": (base + o, s) for k, (o, s) in PHDR_FIELDS.items()})
        if kind == "PT_INTERP":
            regions["interp"] = (p_offset, p_filesz)
    regions["shdrs"] = (shoff, shnum * 64)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * 64) for i in range(shnum)]
    strtab_off = sections[shstrndx][4] if shnum else 0
    by_name: dict[str, tuple[int, ...]] = {}
    for i, sec in enumerate(sections):
        name = _cstr(data, strtab_off + sec[0]) if shnum else ""
        for label in (f"shdr[{i}]", f"shdr[{name}]"):
            fields.update({f"{label}.{k}": (shoff + i * 64 + o, s) for k, (o, s) in SHDR_FIELDS.items()})
        if name and sec[1] != 8:                    # SHT_NOBITS has no bytes in the file
            regions[name] = (sec[4], sec[5])
            by_name[name] = sec
    for table, strings in ((".symtab", ".strtab"), (".dynsym", ".dynstr")):
        if table in by_name and strings in by_name:
            _symbols(data, fields, table, by_name[table], by_name[strings])
    if ".dynamic" in by_name:
        off, size = by_name[".dynamic"][4], by_name[".dynamic"][5]
        for i in range(size // 16):
            tag = struct.unpack_from("<q", data, off + i * 16)[0]
            for label in {f".dynamic[{i}]", f".dynamic[{DT_NAMES.get(tag, tag)}]"}:
                fields.setdefault(f"{label}.d_tag", (off + i * 16, 8))
                fields.setdefault(f"{label}.d_val", (off + i * 16 + 8, 8))
    counts = {"phdr": phnum, "shdr": shnum}
    for table, entsize in ((".symtab", 24), (".dynsym", 24), (".dynamic", 16)):
        if table in by_name:
            counts[table] = by_name[table][5] // entsize
    return Layout(data, fields, regions, counts)


def _cstr(data: bytes, off: int) -> str:
    end = data.find(b"\0", off)
    return data[off:end].decode(errors="replace") if 0 <= off < len(data) and end >= 0 else ""


def _symbols(data: bytes, fields: dict[str, tuple[int, int]], table: str, sec: tuple[int, ...],
             strings: tuple[int, ...]) -> None:
    off, size = sec[4], sec[5]
    for i in range(size // 24):
        name = _cstr(data, strings[4] + struct.unpack_from("<I", data, off + i * 24)[0])
        labels = [f"{table}[{i}]"] + ([f"{table}[{name}]"] if name in SYMBOLS_OF_NOTE else [])
        for label in labels:
            fields.update({f"{label}.{k}": (off + i * 24 + o, s) for k, (o, s) in SYM_FIELDS.items()})


# --- mutations -------------------------------------------------------------------------------
# ("set", FIELD, VALUE)   the field becomes VALUE (truncated to its size)
# ("add", FIELD, DELTA)   the field's value plus DELTA (wrapping)
# ("size", FIELD, DELTA)  the file's size plus DELTA
# ("bytes", REGION, OFFSET, DATA)  DATA written at OFFSET into REGION (may run past it)
# ("interp", DATA)        DATA written over the PT_INTERP string
# ("truncate", LENGTH)    the file cut to LENGTH bytes (LENGTH < 0: that many off its end)
Mutation = tuple[Any, ...]


def mutate(lay: Layout, mutations: list[Mutation]) -> bytes:
    """Apply ``mutations`` in order (what this file lacks is skipped)."""
    out = bytearray(lay.data)
    cut: int | None = None
    for mut in mutations:
        op = mut[0]
        where = field_of(lay, mut[1]) if op in ("set", "add", "size") else None
        if where is not None:
            off, size = where
            old = int.from_bytes(out[off:off + size], "little")
            value = {"set": mut[2], "add": old + mut[2], "size": len(lay.data) + mut[2]}[op]
            out[off:off + size] = (value % (1 << (8 * size))).to_bytes(size, "little")
        elif op in ("bytes", "interp"):
            region, at, data = ("interp", 0, mut[1]) if op == "interp" else mut[1:]
            if region not in lay.regions:
                continue
            start, length = lay.regions[region]
            pos = start + (at % length if length else 0)
            data = data[:max(0, len(out) - pos)]
            out[pos:pos + len(data)] = data
        elif op == "truncate":
            cut = mut[1] if mut[1] >= 0 else max(0, len(out) + mut[1])
    if cut is not None:
        del out[cut:]
    return bytes(out)


_INDEXED = re.compile(r"^(phdr|shdr|\.symtab|\.dynsym|\.dynamic)\[(\d+)\]\.(\w+)$")


def field_of(lay: Layout, name: str) -> tuple[int, int] | None:
    """(offset, size) of the field ``name``; a numeric index wraps around its table."""
    m = _INDEXED.match(name)
    if m and lay.counts.get(m[1]):
        name = f"{m[1]}[{int(m[2]) % lay.counts[m[1]]}].{m[3]}"
    return lay.fields.get(name)


INTERESTING = [0, 1, 2, 3, 4, 7, 8, 0x38, 0x40, 0xFF, 0x100, 0xFFF, 0x1000, 0x1001, 0x7FFF, 0xFFFF,
               0x10000, 0x200000, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 1 << 32, 0x7FFF_FFFF_F000,
               0x8000_0000_0000, 0xFFFF_8000_0000_0000, (1 << 63) - 1, 1 << 63, (1 << 64) - 0x1000,
               (1 << 64) - 1]
INTERPS = [b"/lib64/ld-linux-x86-64.so.2\0", b"/dev/zero\0", b"/dev/urandom\0", b"/proc/self/exe\0",
           b"/proc/self/fd/0\0", b"/etc/passwd\0", b"/lib64/../lib64/ld-linux-x86-64.so.2\0",
           b"/lib/x86_64-linux-gnu/libc.so.6\0", b"/lib/x86_64-linux-gnu/libm.so.6\0", b"/lib64\0",
           b"/\0", b"\0", b"/usr/lib/../../etc/shadow\0", b"lib64/ld-linux-x86-64.so.2\0",
           b"/lib64/ld-linux-x86-64.so.2", b"/lib64/\xff\xfe\0", b"/lib64/" + b"a" * 300 + b"\0",
           b"/lib/x86_64-linux-gnu/\0", b"/lib64/ld-linux-x86-64.so.2/\0"]
REGIONS = ["file", "ehdr", "phdrs", "interp", "shdrs", ".symtab", ".strtab", ".dynsym", ".dynstr",
           ".dynamic", ".eh_frame", ".eh_frame_hdr", ".shstrtab", ".text", ".rela.plt", ".gnu.hash",
           ".note.gnu.build-id", ".init_array", ".got", ".data"]


# Mutations do not depend on the base file (so hypothesis can replay and shrink them
# freely): an index past the end of a table wraps around (``phdr[9]`` of a file with
# 7 program headers is ``phdr[2]``); a missing table or region is skipped.
FIELDS = st.one_of(
    st.sampled_from([f"ehdr.{f}" for f in EHDR_FIELDS]),
    st.builds("phdr[{}].{}".format, st.integers(0, 15), st.sampled_from(list(PHDR_FIELDS))),
    st.builds("shdr[{}].{}".format, st.integers(0, 40), st.sampled_from(list(SHDR_FIELDS))),
    st.builds("{}[{}].{}".format, st.sampled_from([".symtab", ".dynsym"]), st.integers(0, 1 << 16),
              st.sampled_from(list(SYM_FIELDS))),
    st.builds(".dynamic[{}].{}".format, st.integers(0, 40), st.sampled_from(list(DYN_FIELDS))),
)
MUTATION = st.one_of(
    st.tuples(st.just("set"), FIELDS, st.sampled_from(INTERESTING) | st.integers(0, (1 << 64) - 1)),
    st.tuples(st.just("add"), FIELDS, st.integers(-0x2000, 0x2000)),
    st.tuples(st.just("size"), FIELDS, st.sampled_from([-1, 0, 1, 0x1000])),
    st.tuples(st.just("bytes"), st.sampled_from(REGIONS), st.integers(0, 1 << 20),
              st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("interp"), st.sampled_from(INTERPS) | st.binary(max_size=40)),
)
TRUNCATE = st.tuples(st.just("truncate"), st.integers(0, 4096) | st.integers(-4096, -1)
                     | st.integers(0, 1 << 20))
MUTATIONS = st.builds(lambda ms, t: ms + t, st.lists(MUTATION, min_size=1, max_size=4),
                      st.lists(TRUNCATE, max_size=1))


# --- the job (runs in the sandbox's child) -------------------------------------------------
FAULT_REASONS = {"unmapped", "protection", "invalid-instruction", "trap", "insn-budget", "timeout",
                 "exception", "deadlock"}


def load_and_run(path: str, argv: list[str], probe_at: str, fs_root: str | None = None) -> tuple[Any, ...]:
    """Load, probe ``probe_at`` (a symbol, ``OBJECT:SYMBOL`` pending until mapped, or
    ``sub_*``: the functions a stripped file's ``.eh_frame`` gives) with a
    stack-unwinding handler, run; the outcome as data. Any exception but the
    documented ones propagates (a failure), and so does a host error the syscall
    layer had to turn into an errno (a mutated library is mapped by the guest)."""
    report = io.StringIO()
    with contextlib.redirect_stderr(report):
        outcome = _load_and_run(path, argv, probe_at, fs_root)
    assert "a bug in the syscall layer" not in report.getvalue(), report.getvalue()
    return outcome


def _load_and_run(path: str, argv: list[str], probe_at: str, fs_root: str | None) -> tuple[Any, ...]:
    try:
        m = Machine.from_elf(path, argv, fs_root=fs_root, mem_limit=GUEST_MEM_LIMIT)
    except LoadError as exc:
        message = str(exc)
        assert "\n" not in message, f"LoadError is not one line: {message!r}"
        return ("load-error", message)
    with m:
        m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
        traces: list[list[int]] = []

        def unwind(kp: Kprobe, regs: Any) -> int:
            traces.append(stack_trace(m, regs))
            [m.symbolize(a) for a in traces[-1]]
            return 0

        names = sorted(n for n in m.symbols if n.startswith("sub_"))[:8] if probe_at == "sub_*" \
            else [probe_at]
        probe: Any = []
        for name in names:
            try:
                register_kprobe(m, Kprobe(symbol_name=name, pre_handler=unwind))
            except ProbeError as exc:
                probe.append(exc.errno)
            else:
                probe.append(probe_at)
        try:
            status = m.run(max_insns=200_000, timeout=2)
        except GuestFault as fault:
            assert fault.reason in FAULT_REASONS, fault.reason
            return ("fault", fault.reason, probe, m.stdout.getvalue())
        except ProbeError as exc:       # a pending probe that cannot arm in the mapped library
            assert exc.errno and not isinstance(exc, ParseError), exc
            return ("probe-error", exc.errno, probe, m.stdout.getvalue())
        return ("exit", status, probe, m.stdout.getvalue())


def fuzz_warm_up() -> None:
    """In the sandbox's worker, before it forks: the intact runs fill the per-process
    caches of the symbols and CFI of libc and ld.so, which every child then shares."""
    for file, argv, probe_at, _expect in BASES.values():
        if (BIN_DIR / file).exists() and ":" not in probe_at:
            load_and_run(str(BIN_DIR / file), argv, probe_at)


# --- the tests ---------------------------------------------------------------------------------
HELLO = b"hello from a program without libc\n"
BASES = {   # name: (file under guest/bin or made by the fixture, argv, probed symbol, intact outcome)
    "fib.static": ("fib.static", ["fib", "10"], "main", ("exit", 55, ["main"], b"fib(10) = 55\n")),
    "fib.dyn": ("fib.dyn", ["fib", "10"], "main", ("exit", 55, ["main"], b"fib(10) = 55\n")),
    "nolibc": ("nolibc", ["nolibc", "x"], "count_args", ("exit", 42, ["count_args"], HELLO)),
    "nolibc.stripped": ("nolibc.stripped", ["nolibc", "x"], "sub_*", ("exit", 42, ["sub_*"] * 2, HELLO)),
    # A shared library the guest's ld.so maps (from fs_root, through openat/mmap), next to
    # an intact program that needs it: the library is what is mutated.
    "libfz.so": ("libfz.so", ["fzmain"], "libfz.so:fz_add", ("exit", 3, ["libfz.so:fz_add"], b"13\n")),
}
LIBFZ_C = "int fz_add(int a, int b) { return a + 3 * b; }\nconst char *fz_name(void) { return \"fz\"; }\n"
FZMAIN_C = ("#include <stdio.h>\nint fz_add(int, int);\n"
            "int main(int argc, char **argv) { printf(\"%d\\n\", fz_add(argc, 4)); return 3; }\n")


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Layout]:
    """The intact files, a stripped nolibc (its symbols come from ``.eh_frame``) and
    libfz.so with the program that loads it (``DT_RUNPATH`` "."; the guest's working
    directory is its ``fs_root``)."""
    bin_dir = guest_bin()
    work = tmp_path_factory.mktemp("bases")
    shutil.copy(bin_dir / "nolibc", work / "nolibc")
    if shutil.which("strip"):
        subprocess.run(["strip", "-o", str(work / "nolibc.stripped"), str(work / "nolibc")], check=True)
    (work / "libfz.c").write_text(LIBFZ_C)
    (work / "fzmain.c").write_text(FZMAIN_C)
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", "libfz.so", "libfz.c"], cwd=work, check=True)
    subprocess.run(["gcc", "-O1", "-o", "fzmain", "fzmain.c", "-L.", "-lfz", "-Wl,-rpath,."], cwd=work,
                   check=True)
    out = {}
    for name, (file, *_rest) in BASES.items():
        path = bin_dir / file if (bin_dir / file).exists() else work / file
        if path.exists():
            out[name] = layout(path.read_bytes())
    out["libfz.so"].companion = (work / "fzmain").read_bytes()
    return out


def run_case(sandbox: Sandbox, base: str, lay: Layout, muts: list[Mutation],
             known: tuple[KnownBug, ...] = ()) -> tuple[Any, ...]:
    with tempfile.TemporaryDirectory() as tmp:
        _file, argv, probe_at, _expect = BASES[base]
        if lay.companion is None:
            path = Path(tmp) / base.split(".")[0]
            path.write_bytes(mutate(lay, muts))
            fs_root = None
        else:                           # the library is mutated, the program is not
            (Path(tmp) / base).write_bytes(mutate(lay, muts))
            path = Path(tmp) / argv[0]
            path.write_bytes(lay.companion)
            path.chmod(0o755)
            fs_root = tmp
        result: tuple[Any, ...] = sandbox.check(load_and_run, str(path), argv, probe_at, fs_root,
                                                timeout=30, known=known)
        return result


def crash() -> None:
    import ctypes
    ctypes.string_at(0)


def hang() -> None:
    while True:
        pass


def hog() -> int:
    return len(bytearray(8 << 30))


def test_the_sandbox_reports_crash_hang_and_memory(sandbox: Sandbox) -> None:
    """The harness itself: a segfault, a hang and a blow-up of a case are failures
    that name what happened, and pytest survives them."""
    with pytest.raises(AssertionError, match="host crash: the child died of signal 11"):
        sandbox.check(crash)
    with pytest.raises(AssertionError, match="hang: the child ran past its timeout"):
        sandbox.check(hang, timeout=1)
    with pytest.raises(AssertionError, match="MemoryError"):
        sandbox.check(hog)
    assert sandbox.check(len, "four") == 4


def test_intact_bases_load_and_run(sandbox: Sandbox, bases: dict[str, Layout]) -> None:
    """The baseline: each unmutated file runs to its usual output, probed."""
    assert {"fib.static", "fib.dyn", "nolibc"} <= set(bases)
    for name, lay in bases.items():
        assert run_case(sandbox, name, lay, []) == BASES[name][3], name


@budget(100)
@given(base=st.sampled_from(sorted(BASES)), muts=MUTATIONS)
def test_mutated_elf_loads_or_fails_cleanly(sandbox: Sandbox, bases: dict[str, Layout], base: str,
                                            muts: list[Mutation]) -> None:
    assume(base in bases)
    try:
        run_case(sandbox, base, bases[base], muts, known=KNOWN_BUGS)
    except KnownBugHit:
        reject()            # pinned below; look for something else


def test_truncated_at_every_boundary(sandbox: Sandbox, bases: dict[str, Layout]) -> None:
    """Cut nolibc and fib.dyn at each edge of their headers, segments and sections
    (and one byte either side)."""
    for base in ("nolibc", "fib.dyn"):
        lay = bases[base]
        edges = {0, 4, 5, 63, 64, 65}
        for off, length in lay.regions.values():
            edges |= {off, off + length}
        cuts = sorted({e + d for e in edges for d in (-1, 0, 1) if 0 <= e + d < len(lay.data)})
        for cut in cuts:
            run_case(sandbox, base, lay, [("truncate", cut)])


# --- what the fuzzer found ----------------------------------------------------------------------
# Minimized cases of bugs the fuzzers found, all fixed: each must now load (or be a
# LoadError) and run with only documented outcomes. Open bugs would be KnownBug
# entries (so the fuzzers look past them) with strict xfails here.
# .eh_frame offsets are those of gcc's usual layout: the CIE ("zR") is bytes 0-23, the
# first FDE starts at 24 (its pc_begin at 32, its pc_range at 36, both pcrel sdata4, its
# augmentation length at 40, its call frame instructions from 41).
KNOWN_BUGS: tuple[KnownBug, ...] = ()
_AUXV = _OVERFLOW = _PYELFTOOLS_CFI = _PYELFTOOLS_LOAD = None    # the bugs' marks, once open
REGRESSIONS = [     # (id, base, mutations, (mark, bug) while it fails, else None)
    ("pie-entry-past-2**64", "fib.dyn", [("set", "ehdr.e_entry", (1 << 64) - 1)], _AUXV),
    ("pie-pt-phdr-past-2**64", "fib.dyn", [("set", "phdr[PT_PHDR].p_vaddr", (1 << 64) - 1)], _AUXV),
    ("cfi-fde-pc-begin-negative", "nolibc", [("bytes", ".eh_frame", 32, b"\x00\x00\x00\x80")], _OVERFLOW),
    ("cfi-fde-pc-range-negative", "nolibc", [("bytes", ".eh_frame", 36, b"\x00\x00\x00\x80")], _OVERFLOW),
    ("cfi-cie-augmentation", "nolibc", [("bytes", ".eh_frame", 9, b"\x80")], _PYELFTOOLS_CFI),
    ("cfi-cie-no-fde-encoding", "nolibc", [("bytes", ".eh_frame", 9, b"\x00")], _PYELFTOOLS_CFI),
    ("cfi-cie-bad-encoding", "nolibc", [("bytes", ".eh_frame", 16, b"\x80")], _PYELFTOOLS_CFI),
    ("cfi-eh-frame-size-huge", "nolibc", [("set", "shdr[.eh_frame].sh_size", 1 << 62)], _PYELFTOOLS_CFI),
    ("cfi-fde-restore-state-empty", "nolibc", [("bytes", ".eh_frame", 41, b"\x0b")], _PYELFTOOLS_CFI),
    ("cfi-of-a-library-cie-augmentation", "libfz.so", [("bytes", ".eh_frame", 9, b"\x80")],
     _PYELFTOOLS_CFI),
    ("load-stripped-cie-augmentation", "nolibc.stripped", [("bytes", ".eh_frame", 9, b"\x80")],
     _PYELFTOOLS_LOAD),
    ("load-stripped-cie-no-fde-encoding", "nolibc.stripped", [("bytes", ".eh_frame", 9, b"\x00")],
     _PYELFTOOLS_LOAD),
    ("load-stripped-eh-frame-size-huge", "nolibc.stripped",
     [("set", "shdr[.eh_frame].sh_size", 1 << 62)], _PYELFTOOLS_LOAD),
]


@pytest.mark.parametrize("base, muts, bug", [
    pytest.param(b, m, o and o[1], id=n, marks=o[0] if o else ()) for n, b, m, o in REGRESSIONS])
def test_regressions(sandbox: Sandbox, bases: dict[str, Layout], base: str, muts: list[Mutation],
                     bug: KnownBug | None) -> None:
    if base not in bases:
        pytest.skip(f"{base} is not available (strip is not installed)")
    run_case(sandbox, base, bases[base], muts, known=(bug,) if bug else ())
