"""The objects (executable, interpreter, shared libraries) mapped into a guest.

The loader maps the executable and its interpreter itself; the interpreter maps
every shared library through the guest's own ``openat``/``mmap``. Each file
mapping is recorded here (:meth:`ObjectTable.note_file_mapping`); once every
``PT_LOAD`` segment of one ELF file is mapped with one load bias the object is
complete: its symbols join the machine's table and ``on_mapped`` callbacks run.

Symbol names follow the uprobes ``PATH:SYMBOL`` convention with the file's
base name: ``libc.so.6:malloc``; the executable's symbols keep their plain
names (``main``), as they do for assembled code. ``OBJECT:SYMBOL`` also takes
the object's other names (:attr:`MappedObject.names`: full path, soname, short
name ``libc`` as bpftrace does). Code no symbol covers still has its
``.eh_frame``: each such FDE's range becomes a function ``sub_<link-time
address in hex>`` (IDA's and Ghidra's convention), so a stripped program's
stack traces and probes have names; in a library with symbols these are the
few functions it does not export.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from elftools.common.exceptions import DWARFError, ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from ._cfi import fde_ranges
from ._elfhdr import ElfFile, parse_elf, read_elf_bytes
from ._errors import LoadError
from ._symbols import SymbolTable

__all__ = ["MappedObject", "FileMapping", "ObjectTable", "EXE", "INTERP", "LIB", "short_name"]

EXE, INTERP, LIB = "exe", "interp", "lib"
_PAGE_MASK = ~0xFFF
# pyelftools calls STT_GNU_IFUNC (10) "STT_LOOS".
_FUNCTION_TYPES = frozenset({"STT_FUNC", "STT_GNU_IFUNC", "STT_LOOS"})
_SYMBOL_TYPES = _FUNCTION_TYPES | {"STT_OBJECT", "STT_NOTYPE"}


@dataclass(frozen=True)
class FileMapping:
    """One ``mmap`` of a file: ``[start, end)`` shows the file from ``offset``."""

    path: str
    offset: int
    start: int
    end: int
    perms: int


@dataclass(frozen=True)
class MappedObject:
    """An ELF file wholly mapped into the guest.

    Attributes:
        path: the path as the guest (or the loader) opened it.
        name: its base name, the prefix of its symbols (``libc.so.6``).
        kind: ``"exe"``, ``"interp"`` or ``"lib"``.
        base: the load bias (run-time address minus link-time address).
        start, end: the address range of its ``PT_LOAD`` segments.
        nsyms: how many symbols it added to the machine's table.
        soname: its ``DT_SONAME``, if it has one.
    """

    path: str
    name: str
    kind: str
    base: int
    start: int
    end: int
    nsyms: int
    soname: str | None = None

    def symbol_name(self, symbol: str) -> str:
        """The machine's name for ``symbol`` of this object."""
        return symbol if self.kind == EXE else f"{self.name}:{symbol}"

    @property
    def names(self) -> tuple[str, ...]:
        """Every name ``OBJECT:SYMBOL`` may give it: base name, path (as opened, and
        resolved), soname, short name."""
        names = [self.name, self.path, os.path.realpath(self.path), self.soname or "",
                 short_name(self.name), short_name(self.soname or "")]
        return tuple(dict.fromkeys(n for n in names if n))

    def matches(self, name: str) -> bool:
        return name in self.names


def short_name(name: str) -> str:
    """The bpftrace-style short name of a library: its base name up to ``.so`` or
    ``-`` (``libc.so.6``, ``libc-2.31.so`` -> ``libc``); ``""`` for a name without
    ``.so`` (an executable is named by its base name only)."""
    base = os.path.basename(name)
    if ".so" not in base:
        return ""
    return base.split(".so", 1)[0].split("-", 1)[0]


ObjectCallback = Callable[[MappedObject], None]


class ObjectTable:
    """Every object and file mapping of one guest.

    Attributes:
        on_mapped: callbacks ``fn(obj)`` run when an object is complete (after
            its symbols are in the machine's table). A client that arms things
            by name checks :meth:`__iter__` for objects mapped before it came.
        mappings: every file mapping, in order.
    """

    def __init__(self, symbols: SymbolTable) -> None:
        self._symbols = symbols
        self._objects: list[MappedObject] = []
        self.on_mapped: list[ObjectCallback] = []
        self.mappings: list[FileMapping] = []
        # realpath -> bias -> indices of its PT_LOAD segments mapped so far
        self._partial: dict[str, dict[int, set[int]]] = {}

    def __iter__(self) -> Iterator[MappedObject]:
        return iter(list(self._objects))

    def __len__(self) -> int:
        return len(self._objects)

    def find(self, name: str) -> MappedObject | None:
        """The first object mapped that ``name`` names (see :attr:`MappedObject.names`)."""
        for obj in self._objects:
            if obj.matches(name):
                return obj
        return None

    def object_at(self, addr: int) -> MappedObject | None:
        for obj in self._objects:
            if obj.start <= addr < obj.end:
                return obj
        return None

    def add_object(self, elf: ElfFile, path: str, base: int, kind: str) -> MappedObject:
        """Announce an object mapped in full (by the loader or by the guest)."""
        name = os.path.basename(path)
        prefix = "" if kind == EXE else f"{name}:"
        symbols, soname = _file_info(elf.path)
        syms = [(prefix + n, v + base, size) for n, v, size in symbols]
        obj = MappedObject(path, name, kind, base, elf.low + base, _page_up(elf.high + base), len(syms),
                           soname)
        self._symbols.add_object_names(obj.names, prefix)
        self._symbols.add_many(syms)
        self._objects.append(obj)
        for fn in list(self.on_mapped):
            fn(obj)
        return obj

    def note_file_mapping(self, path: str, realpath: str, offset: int, start: int,
                          end: int, perms: int) -> MappedObject | None:
        """Record a guest ``mmap`` of a file; return the object it completes, if any."""
        self.mappings.append(FileMapping(path, offset, start, end, perms))
        elf = _elf_headers(realpath)
        if elf is None:
            return None
        partial = self._partial.setdefault(realpath, {})
        for i, seg in enumerate(elf.loads):
            if seg.offset & _PAGE_MASK != offset:
                continue
            bias = start - (seg.vaddr & _PAGE_MASK)
            done = partial.setdefault(bias, set())
            done.add(i)
            if len(done) == len(elf.loads):
                del self._partial[realpath]
                return self.add_object(elf, path, bias, LIB)
        return None


def _page_up(addr: int) -> int:
    return (addr + 0xFFF) & _PAGE_MASK


def _file_key(path: str) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_mtime_ns, st.st_size)


def _elf_headers(realpath: str) -> ElfFile | None:
    key = _file_key(realpath)
    return _cached_headers(key) if key is not None else None


@functools.lru_cache(maxsize=64)
def _cached_headers(key: tuple[str, int, int]) -> ElfFile | None:
    try:                        # a regular ELF file of bounded size, or nothing is read
        return parse_elf(key[0], read_elf_bytes(key[0]))
    except LoadError:
        return None


def _file_info(path: str) -> tuple[tuple[tuple[str, int, int], ...], str | None]:
    key = _file_key(path)
    return _cached_info(key) if key is not None else ((), None)


@functools.lru_cache(maxsize=64)
def _cached_info(key: tuple[str, int, int]) -> tuple[tuple[tuple[str, int, int], ...], str | None]:
    """The file's symbols and soname. Symbols: ``(name, value, size)`` of the
    defined symbols of ``.symtab``, else ``.dynsym``, plus a ``sub_ADDR`` for each
    ``.eh_frame`` function none of them covers, sorted by value.

    Aliases at one address come worst name first, so that reverse lookups
    (which take the last) say ``malloc`` rather than ``__libc_malloc``.
    """
    try:
        with open(key[0], "rb") as f:
            elf = ELFFile(f)
            table = elf.get_section_by_name(".symtab") or elf.get_section_by_name(".dynsym")
            ranked: list[tuple[str, int, int]] = []
            if isinstance(table, SymbolTableSection):
                ranked = [(name, value, size) for value, _rank, name, size in sorted(_defined(table))]
            ranked = sorted(ranked + _fde_functions(elf, ranked), key=lambda sym: sym[1])
            return tuple(ranked), _soname(elf)
    except (OSError, ELFError, DWARFError, ValueError):
        return (), None


def _soname(elf: ELFFile) -> str | None:
    dynamic = elf.get_section_by_name(".dynamic")
    if not isinstance(dynamic, DynamicSection):
        return None
    for tag in dynamic.iter_tags("DT_SONAME"):
        return str(tag.soname)  # type: ignore[attr-defined]
    return None


def _fde_functions(elf: ELFFile, symbols: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """``sub_ADDR`` for the ``.eh_frame`` function ranges that start in no symbol's
    range (and at no symbol's address)."""
    section = elf.get_section_by_name(".eh_frame")
    if section is None or section["sh_type"] == "SHT_NOBITS":
        return []
    stream = elf.stream
    size = stream.seek(0, 2)
    if section["sh_offset"] + section["sh_size"] > size:
        return []                   # a corrupt header: never read past the file (a huge sh_size)
    covered = sorted((value, value + max(size, 1)) for _name, value, size in symbols)
    starts = [start for start, _end in covered]
    reach = list(itertools.accumulate((end for _start, end in covered), max))
    out = []
    for start, size in fde_ranges(section.data(), section["sh_addr"]):
        i = bisect.bisect_right(starts, start) - 1
        if i < 0 or reach[i] <= start:
            out.append((f"sub_{start:x}", start, size))
    return out


_BINDING_RANK = {"STB_LOCAL": 0, "STB_WEAK": 1, "STB_GNU_UNIQUE": 2, "STB_GLOBAL": 2}


def _defined(table: SymbolTableSection) -> Iterator[tuple[int, tuple[int, int, int], str, int]]:
    for sym in table.iter_symbols():
        name = sym.name
        if (name and sym["st_shndx"] not in ("SHN_UNDEF", "SHN_ABS") and sym["st_value"]
                and sym["st_info"]["type"] in _SYMBOL_TYPES and not name.startswith(".L")):
            underscores = len(name) - len(name.lstrip("_"))
            rank = (-underscores, _BINDING_RANK.get(sym["st_info"]["bind"], 0), -len(name))
            yield sym["st_value"], rank, name, sym["st_size"]
