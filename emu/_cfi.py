"""Call frame information: the ``.eh_frame`` rules of the mapped ELF objects.

Every gcc and clang build carries ``.eh_frame`` (the C++ unwinder and glibc's
``backtrace`` need it), also with ``-fomit-frame-pointer``. Its FDEs say, for
each instruction of a function, how to find the caller's frame: the canonical
frame address (CFA, the caller's ``rsp`` after the call returns) as a register
plus an offset, and where the return address and callee-saved registers were
saved, relative to the CFA (DWARF 5 section 6.4 "Call Frame Information"; the
LSB's ".eh_frame section"; the x86-64 psABI's 3.7 "Stack Unwind Algorithm").

What is kept of each FDE is what an unwinder that tracks ``rsp``, ``rbp`` and
``rip`` needs: rows of :class:`CfaRow`. A rule it cannot follow (a DWARF
expression, as in PLT entries and signal frames; a register kept in another
register) makes that row unsupported: :func:`cfa_row` gives ``None`` there, and
the caller falls back to frame pointers.

Invariants:
- a file's table is parsed on the first lookup in it, once per process (cached
  by path, mtime and size, 16 files at most) and shared by every machine; a machine caches which table serves
  which of its objects (``m.extensions["emu.cfi"]``);
- only files the loader or the guest mapped are read: the path is the one their
  memory region was mapped from (the host path the loader or ``openat`` opened);
- addresses in a table are link-time; the object's load bias is applied at lookup.
"""

from __future__ import annotations

import bisect
import functools
import os
import struct
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from elftools.dwarf.callframe import FDE, CFARule, RegisterRule
from elftools.elf.elffile import ELFFile

if TYPE_CHECKING:
    from ._machine import Machine
    from ._objects import MappedObject

__all__ = ["CfaRow", "FdeTable", "cfa_row", "fde_ranges", "DWARF_RBP", "DWARF_RSP", "DWARF_RA"]

# psABI Figure 3.36, "DWARF Register Number Mapping".
DWARF_RBP, DWARF_RSP, DWARF_RA = 6, 7, 16
_EXT_KEY = "emu.cfi"
_ADDR_LIMIT = 1 << 64
_UNSUPPORTED = -1                 # CfaRow.cfa_reg of a row the unwinder cannot follow


class CfaRow(NamedTuple):
    """How to find the caller's frame from ``pc`` (link-time) on, up to the next row.

    ``cfa = (rsp if cfa_reg == DWARF_RSP else rbp) + cfa_offset``; the return
    address is at ``cfa + ra_offset`` (``None``: undefined, the outermost frame,
    as ``_start`` says); the caller's ``rbp`` at ``cfa + rbp_offset`` (``None``:
    rbp still holds it). The caller's ``rsp`` is the CFA.
    """

    pc: int
    cfa_reg: int
    cfa_offset: int
    ra_offset: int | None
    rbp_offset: int | None

    @property
    def supported(self) -> bool:
        return self.cfa_reg != _UNSUPPORTED


class FdeTable:
    """The FDEs of one file, sorted by start, in flat arrays (libc's 3,700 FDEs
    and 25,000 rows take about 400 KB).

    FDE ``i`` covers ``[starts[i], ends[i])``; its rows are ``first[i]`` up to
    ``first[i + 1]`` of ``row_pcs`` and ``row_shapes``, the latter indices into
    ``shapes`` (``CfaRow`` fields after ``pc``; few distinct ones).
    """

    __slots__ = ("starts", "ends", "first", "row_pcs", "row_shapes", "shapes")

    def __init__(self, fdes: list[tuple[int, int, tuple[CfaRow, ...]]]) -> None:
        fdes.sort(key=lambda fde: fde[0])
        self.starts = array("Q", (start for start, _end, _rows in fdes))
        self.ends = array("Q", (end for _start, end, _rows in fdes))
        self.first = array("I", [0])
        self.row_pcs = array("Q")
        self.row_shapes = array("I")
        index: dict[tuple[int, int, int | None, int | None], int] = {}
        for _start, _end, rows in fdes:
            for row in rows:
                shape = (row.cfa_reg, row.cfa_offset, row.ra_offset, row.rbp_offset)
                self.row_pcs.append(row.pc)
                self.row_shapes.append(index.setdefault(shape, len(index)))
            self.first.append(len(self.row_pcs))
        self.shapes: list[tuple[int, int, int | None, int | None]] = list(index)

    def __len__(self) -> int:
        return len(self.starts)

    def rows_of(self, i: int) -> list[CfaRow]:
        """The rows of FDE ``i``."""
        return [CfaRow(self.row_pcs[j], *self.shapes[self.row_shapes[j]])
                for j in range(self.first[i], self.first[i + 1])]

    def row_at(self, pc: int) -> CfaRow | None:
        """The row in force at link-time address ``pc``, or ``None`` (no FDE holds it)."""
        i = bisect.bisect_right(self.starts, pc) - 1
        if i < 0 or pc >= self.ends[i] or self.first[i] == self.first[i + 1]:
            return None
        j = bisect.bisect_right(self.row_pcs, pc, self.first[i], self.first[i + 1]) - 1
        return CfaRow(self.row_pcs[j], *self.shapes[self.row_shapes[j]])


def cfa_row(m: Machine, pc: int) -> CfaRow | None:
    """The supported CFI row in force at run-time address ``pc``, or ``None``
    (no object there, no ``.eh_frame``, no FDE for ``pc``, or a rule the
    unwinder cannot follow): then the caller falls back to frame pointers."""
    obj = m.objects.object_at(pc)
    if obj is None:
        return None
    tables: dict[MappedObject, FdeTable | None] = m.extensions.setdefault(_EXT_KEY, {})
    if obj not in tables:
        tables[obj] = _table_of(m, obj)
    table = tables[obj]
    if table is None:
        return None
    row = table.row_at(pc - obj.base)
    return row if row is not None and row.supported else None


def _table_of(m: Machine, obj: MappedObject) -> FdeTable | None:
    region = m.mem.region_at(obj.start)
    for path in (region.name if region is not None else None, obj.path):
        if path and os.path.isabs(path) and os.path.isfile(path):
            st = os.stat(path)
            return _cached_table((path, st.st_mtime_ns, st.st_size))
    return None


@functools.lru_cache(maxsize=16)
def _cached_table(key: tuple[str, int, int]) -> FdeTable | None:
    try:
        with open(key[0], "rb") as f:
            elf = ELFFile(f)
            if elf.get_section_by_name(".eh_frame") is None:
                return None
            dwarf = elf.get_dwarf_info(relocate_dwarf_sections=False, follow_links=False)
            fdes = _fdes(dwarf.EH_CFI_entries())
    except Exception:      # a hostile .eh_frame may break pyelftools any way: no CFI then
        return None
    return FdeTable(fdes) if fdes else None


def _fdes(entries: Sequence[object]) -> list[tuple[int, int, tuple[CfaRow, ...]]]:
    out = []
    for entry in entries:
        if not isinstance(entry, FDE):
            continue
        start, size = entry.header["initial_location"], entry.header["address_range"]
        # 0: an FDE of code the linker discarded; a range past 2**64: a corrupt one.
        if start > 0 and size > 0 and start + size < _ADDR_LIMIT:
            out.append((start, start + size, _decode(entry)))
    return out


def _decode(fde: FDE) -> tuple[CfaRow, ...]:
    """The FDE's rows; ``()`` when pyelftools cannot decode its instructions."""
    try:
        table = fde.get_decoded().table
    except Exception:      # pyelftools on a corrupt FDE: assertions, KeyError, IndexError...
        return ()
    return tuple(_row(line) for line in table)


class _Unsupported(Exception):
    """A rule the unwinder cannot follow."""


def _row(line: dict[object, object]) -> CfaRow:
    pc = line["pc"]
    cfa = line["cfa"]
    assert isinstance(pc, int) and isinstance(cfa, CFARule)
    try:
        if cfa.expr is not None or cfa.reg not in (DWARF_RSP, DWARF_RBP) or cfa.offset is None:
            raise _Unsupported
        ra = _offset_rule(line.get(DWARF_RA), required=True)
        rbp = _offset_rule(line.get(DWARF_RBP), required=False)
    except _Unsupported:
        return CfaRow(pc, _UNSUPPORTED, 0, None, None)
    return CfaRow(pc, cfa.reg, cfa.offset, ra, rbp)


def _offset_rule(rule: object, *, required: bool) -> int | None:
    """``OFFSET(n)``: n. No rule or ``SAME_VALUE`` (the register keeps its
    value), ``UNDEFINED`` (for the return address: the outermost frame): ``None``.

    Raises:
        _Unsupported: any other rule (an expression, another register), or no
            rule for the return address.
    """
    if rule is None and not required:
        return None
    if not isinstance(rule, RegisterRule):
        raise _Unsupported
    if rule.type == RegisterRule.OFFSET and isinstance(rule.arg, int):
        return rule.arg
    if rule.type == RegisterRule.UNDEFINED or (rule.type == RegisterRule.SAME_VALUE and not required):
        return None
    raise _Unsupported


# --- function ranges only ---------------------------------------------------------
# The LSB's ".eh_frame section": reading just each FDE's pc_begin and pc_range (and
# of each CIE the 'R' augmentation, the FDE pointer encoding) is ~100x faster than
# decoding the rules, which only the unwinder needs (lazily, in _cached_table).
DW_EH_PE_omit, DW_EH_PE_pcrel = 0xFF, 0x10
_EH_PE_FORMATS = {0x00: "<Q", 0x02: "<H", 0x03: "<I", 0x04: "<Q", 0x0A: "<h", 0x0B: "<i", 0x0C: "<q"}


def fde_ranges(data: bytes, section_addr: int) -> list[tuple[int, int]]:
    """``(start, size)`` of every FDE of an ``.eh_frame`` section (link-time
    addresses), in section order; stops quietly at the first entry it cannot read
    (a corrupt section yields what precedes the damage)."""
    out: list[tuple[int, int]] = []
    encodings: dict[int, int] = {}           # CIE offset -> its FDE pointer encoding
    pos = 0
    try:
        while pos + 4 <= len(data):
            length, = struct.unpack_from("<I", data, pos)
            if length == 0:
                break
            head = 4
            if length == 0xFFFFFFFF:
                length, = struct.unpack_from("<Q", data, pos + 4)
                head = 12
            body, end = pos + head, pos + head + length
            if end > len(data) or length < 4:
                break
            cie_ptr, = struct.unpack_from("<I", data, body)
            if cie_ptr == 0:
                encodings[pos] = _cie_fde_encoding(data, body + 4)
            else:
                enc = encodings.get(body - cie_ptr)
                if enc is None:
                    break
                start, at = _read_encoded(data, body + 4, enc, section_addr)
                size, _ = _read_encoded(data, at, enc & 0x0F, 0)
                if 0 < start and 0 < size and start + size < _ADDR_LIMIT:
                    out.append((start, size))
            pos = end
    except (struct.error, ValueError, IndexError):
        pass
    return out


def _cie_fde_encoding(data: bytes, pos: int) -> int:
    version = data[pos]
    nul = data.index(b"\0", pos + 1)
    aug = data[pos + 1:nul].decode("latin-1")
    pos = nul + 1
    if "eh" in aug:
        pos += 8
    _, pos = _uleb(data, pos)                # code alignment
    _, pos = _uleb(data, pos)                # data alignment (sleb: only skipped)
    pos = pos + 1 if version == 1 else _uleb(data, pos)[1]
    if not aug.startswith("z"):
        return 0
    _, pos = _uleb(data, pos)
    for c in aug[1:]:
        if c == "R":
            return data[pos]
        if c == "L":
            pos += 1
        elif c == "P":
            enc = data[pos]
            _, pos = _read_encoded(data, pos + 1, enc & 0x7F, 0)
        elif c not in "SB":
            break
    return 0


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _read_encoded(data: bytes, pos: int, enc: int, section_addr: int) -> tuple[int, int]:
    """A ``DW_EH_PE_*`` value at ``pos`` and the position after it (``pcrel`` is
    relative to the field's own link-time address)."""
    if enc == DW_EH_PE_omit:
        return 0, pos
    fmt = enc & 0x0F
    if fmt == 0x01:
        value, after = _uleb(data, pos)
    elif fmt in _EH_PE_FORMATS:
        value, = struct.unpack_from(_EH_PE_FORMATS[fmt], data, pos)
        after = pos + struct.calcsize(_EH_PE_FORMATS[fmt])
    else:
        raise ValueError(f"DW_EH_PE format {fmt:#x}")
    if enc & 0x70 == DW_EH_PE_pcrel:
        value += section_addr + pos
    return value % _ADDR_LIMIT, after
