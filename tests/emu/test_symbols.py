"""Symbols (issue 11, "Symbols"): C++ names demangled, every name of an object in
``OBJECT:SYMBOL``, ``sub_<addr>`` functions from ``.eh_frame``.

Rules pinned:
- demangling equals binutils' ``c++filt`` on every symbol of a C++ program
  (but for the ``std::string`` abbreviations libstdc++ keeps and libiberty expands);
  a name that is not a mangled one comes back unchanged; an object prefix stays;
- ``symbolize`` prints demangled names; mangled names still resolve, and a
  demangled one (with or without its parameters) where exactly one address has it;
- ``OBJECT:SYMBOL`` takes an object's base name, path, soname and bpftrace's
  short name (base name up to ``.so`` or ``-``), and the executable's base name;
  a ``::`` never separates an object;
- the header-only ``.eh_frame`` reader gives exactly pyelftools' FDE ranges;
- a function no symbol covers is ``sub_<link-time address>`` (stripped ``/bin/ls``,
  libc's unexported functions), one whose start a symbol covers is not.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.dwarf.callframe import FDE
from elftools.elf.elffile import ELFFile

from emu import Machine
from emu._cfi import fde_ranges
from emu._objects import _cached_info, _file_key, short_name
from emu._symbols import SymbolTable, demangle, split_object
from tests.guests import guest_bin as _guest_bin

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
needs_cxxfilt = pytest.mark.skipif(shutil.which("c++filt") is None, reason="no c++filt (binutils)")


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


def _symtab_names(path: Path | str) -> list[str]:
    with open(path, "rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        return sorted({s.name for s in table.iter_symbols() if s.name})


# --- demangling ----------------------------------------------------------------------------------
@needs_cxxfilt
def test_demangle_equals_cxxfilt_on_every_symbol_of_a_cxx_program(guest_bin: Path) -> None:
    names = _symtab_names(guest_bin / "throw.static")
    assert sum(n.startswith("_Z") for n in names) > 100
    done = subprocess.run(["c++filt"], input="\n".join(names) + "\n", capture_output=True, text=True,
                          check=True, timeout=60)
    pairs = [(demangle(n), ref) for n, ref in zip(names, done.stdout.splitlines(), strict=True)
             if "std::basic_" not in ref]
    assert len(pairs) > 100
    assert [ours for ours, _ref in pairs] == [ref for _ours, ref in pairs]


def test_demangle_keeps_other_names_and_the_object_prefix() -> None:
    assert demangle("malloc") == "malloc"
    assert demangle("_Znot_a_mangled_name") == "_Znot_a_mangled_name"
    assert demangle("_Z6middlel") == "middle(long)"
    assert demangle("libfoo.so:_ZN2ns1fEi") == "libfoo.so:ns::f(int)"


@pytest.mark.parametrize(("name", "split"), [
    ("libc:malloc", ("libc", "malloc")),
    ("/usr/lib/x86_64-linux-gnu/libc.so.6:malloc", ("/usr/lib/x86_64-linux-gnu/libc.so.6", "malloc")),
    ("ns::f(int)", (None, "ns::f(int)")),                  # :: is C++, not an object
    ("libfoo.so:ns::f()", ("libfoo.so", "ns::f()")),
    ("main", (None, "main")),
])
def test_split_object(name: str, split: tuple[str | None, str]) -> None:
    assert split_object(name) == split


def test_table_resolves_demangled_names_only_when_unambiguous() -> None:
    t = SymbolTable()
    t.add_many([("_Z6middlel", 0x1000, 0x20), ("_Z1fi", 0x2000, 0x10), ("_Z1fd", 0x3000, 0x10),
                ("_ZN3FooC1Ev", 0x4000, 8), ("_ZN3FooC2Ev", 0x4000, 8)])
    assert t.symbolize(0x1004) == "middle(long)+0x4"
    assert t["_Z6middlel"] == t["middle(long)"] == t["middle"] == 0x1000
    assert t["f(int)"] == 0x2000 and t["f(double)"] == 0x3000
    assert t.get_symbol("f") is None                      # two overloads: ambiguous
    assert t["Foo::Foo()"] == 0x4000                      # C1 and C2 at one address: one function
    assert "nothing(int)" not in t


def test_table_object_names_lead_to_the_objects_prefix() -> None:
    t = SymbolTable()
    t.add_many([("main", 0x401000, 16), ("libc.so.6:malloc", 0x7F0000001000, 64)])
    t.add_object_names(["prog", "/tmp/prog"], "")
    t.add_object_names(["libc.so.6", "libc", "/usr/lib/x86_64-linux-gnu/libc.so.6"], "libc.so.6:")
    for name in ("libc.so.6:malloc", "libc:malloc", "/usr/lib/x86_64-linux-gnu/libc.so.6:malloc"):
        assert t[name] == 0x7F0000001000, name
    assert t["prog:main"] == t["/tmp/prog:main"] == 0x401000
    assert "libcc:malloc" not in t and "libc:main" not in t


@pytest.mark.parametrize(("name", "short"), [
    ("libc.so.6", "libc"), ("libc-2.31.so", "libc"), ("ld-linux-x86-64.so.2", "ld"),
    ("libstdc++.so.6", "libstdc++"), ("libfoo.so", "libfoo"), ("/usr/lib/libm.so.6", "libm"),
    ("fib.static", ""), ("prog", ""),
])
def test_short_name_is_bpftraces(name: str, short: str) -> None:
    assert short_name(name) == short


def test_mapped_objects_answer_to_every_name(guest_bin: Path) -> None:
    m = Machine.from_elf(str(guest_bin / "strings.dyn"))
    m.stdout = io.BytesIO()
    m.run()
    libc = m.objects.find("libc")
    assert libc is not None and libc.name == "libc.so.6" and libc.soname == "libc.so.6"
    real = os.path.realpath(libc.path)
    for name in ("libc", "libc.so.6", real, libc.path):
        assert m.objects.find(name) is libc
        assert m.symbols[f"{name}:malloc"] == m.symbols["libc.so.6:malloc"]
    assert m.symbols["strings.dyn:main"] == m.symbols["main"]


def test_cxx_program_symbolizes_demangled_and_resolves_both_ways(guest_bin: Path) -> None:
    m = Machine.from_elf(str(guest_bin / "throw.static"))
    addr = m.symbols["_Z6middlel"]
    assert m.resolve("middle(long)") == m.resolve("middle") == addr
    assert m.symbolize(addr + 1) == "middle(long)+0x1"


# --- .eh_frame functions -------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/bin/ls", LIBC, "throw.static", "fib.dyn"])
def test_fde_ranges_equal_pyelftools(path: str, guest_bin: Path) -> None:
    full = path if path.startswith("/") else str(guest_bin / path)
    if not os.path.exists(full):
        pytest.skip(f"{full} is not on this host")
    with open(full, "rb") as f:
        elf = ELFFile(f)
        section = elf.get_section_by_name(".eh_frame")
        ours = fde_ranges(section.data(), section["sh_addr"])
        ref = [(e.header["initial_location"], e.header["address_range"])
               for e in elf.get_dwarf_info().EH_CFI_entries() if isinstance(e, FDE)]
    assert len(ours) >= 5
    assert sorted(ours) == sorted((s, n) for s, n in ref if s > 0 and n > 0)


def test_fde_ranges_of_a_corrupt_section_stop_quietly() -> None:
    assert fde_ranges(b"\xff\xff\xff\x7f" + b"\0" * 12, 0x1000) == []
    assert fde_ranges(b"", 0) == []


def test_sub_functions_only_where_no_symbol_starts_or_covers() -> None:
    if not os.path.exists(LIBC):
        pytest.skip("no glibc at the usual path")
    symbols, soname = _cached_info(_file_key(LIBC))            # type: ignore[arg-type]
    assert soname == "libc.so.6"
    named = [(v, v + max(n, 1)) for name, v, n in symbols if not name.startswith("sub_")]
    subs = [(name, v, n) for name, v, n in symbols if name.startswith("sub_")]
    assert subs and all(name == f"sub_{v:x}" for name, v, _n in subs)
    assert not any(lo <= v < hi for _name, v, _n in subs for lo, hi in named)
    assert any(name == "malloc" for name, _v, _n in symbols)


def test_stripped_program_has_sub_functions_in_its_stack_traces(guest_bin: Path, tmp_path: Path) -> None:
    """A stripped executable: symbolize names its functions sub_<link-time address>,
    at the address the unstripped build's symbol has."""
    if shutil.which("strip") is None:
        pytest.skip("strip (binutils) is not installed")
    full = Machine.from_elf(str(guest_bin / "fib.pie"))
    stripped = tmp_path / "fib.stripped"
    subprocess.run(["strip", "-o", str(stripped), str(guest_bin / "fib.pie")], check=True)
    m = Machine.from_elf(str(stripped))
    fib = full.symbols["fib"]
    exe = m.objects.find("fib.stripped")
    assert exe is not None
    assert m.symbolize(fib + 2) == f"sub_{fib - exe.base:x}+0x2"
