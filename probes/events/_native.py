"""Probe events on the native core: fetch programs run in C at the hit, records
in a ring buffer, events made in batches (issue 12, "native tracing actions").

A line whose fetch arguments all compile here gets a ``probes._native.Trace``
as its handler (probes/_trace.c): at each hit C takes the time, runs the
loads, dereferences and memory reads of :mod:`._fetch` (the reference) and
writes one record to the machine's :class:`probes._native.Ring`, without
entering Python and, when nothing else at the site needs it, without the GIL.
What needs no guest state at the hit is left to the drain: the print
conversions (sign, bitfield, ``char``, ``symbol``), ``symstr``, UTF-8
decoding, ``$comm`` and constant strings. The drain makes the very
:class:`Event` objects the Python path makes and hands them to the sink.

When records become events (so that nothing is lost and the order is the
Python path's): at each system call's entry (before the guest's own output,
and before anything that changes ``comm``, the symbols or the memory map),
whenever the engine stops (the end of a call, a slice, a fault:
``Machine.on_pause``), before any event of a Python-path line of the machine,
when the ring is full, when a line is detached, and on :func:`flush`.

Not compiled (the line keeps the Python path): ``@SYM`` (resolved at each
hit), ``stack=True``, a string, an array or ``$comm`` taken at a return
probe's entry (``$entry(...)`` around the argument: 16 bytes a value in
``ri.data``, which holds 4096), more than 16 values taken at entry, a record
larger than a quarter of the ring.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emu import Machine

from .._cnative import NATIVE
from ._fetch import Fetcher, _convert, _mask, _symbolize
from ._tables import MAX_STRING_SIZE
from ._types import Program

__all__ = ["Compiled", "compile_line", "ring_of", "flush", "RING_BYTES"]

RING_BYTES = 1 << 20
MAX_CAPTURES = 16

# probes/_trace.c
L_FAULT, L_REG, L_IMM, L_STACK, L_STACKP, L_RETVAL, L_ARG, L_CAPT, L_DUR = range(9)
S_RAW, S_MEM, S_STR = range(3)
_ARG_FAULT = (1 << 64) - 1
_ELEM_FAULT = (1 << 64) - 2
_REC_HEAD = 40
_REGS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
         "r13", "r14", "r15", "rip", "eflags")
_U64 = (1 << 64) - 1
_HEAD = struct.Struct("<IHHQQQQ")
_WORD = struct.Struct("<Q")
_PAIR = struct.Struct("<QQ")
_RING_KEY = "probes.events.ring"


class _Unsupported(Exception):
    """This argument keeps the Python path."""


@dataclass
class _Arg:
    """How the drain turns one argument's record bytes into its value."""

    fetcher: Fetcher
    how: str                  # "num", "sym" (symstr), "str", "comm", "data"
    count: int
    text: str = ""            # "data": the constant

    def __post_init__(self) -> None:
        prog = self.fetcher._prog
        # A number printed as it is read (u, x without a bitfield): its mask; else 0.
        self.plain = (_mask(prog.ftype.size) if self.how == "num" and prog.bitfield is None
                      and prog.ftype.kind in ("u", "x") else 0)

    def convert(self, sym: _Symbols, v: int) -> Any:
        """A number's value as :func:`._fetch._run` gives it."""
        if self.how == "sym":
            return _symbolize(sym, v)                    # type: ignore[arg-type]
        prog = self.fetcher._prog
        return _convert(prog, sym, v & _mask(prog.ftype.size))   # type: ignore[arg-type]


@dataclass
class Compiled:
    """A line's programs for ``probes._native.Trace``."""

    code: bytes
    nargs: int
    ecode: bytes
    ncapt: int
    args: list[_Arg]


def _s64(value: int) -> int:
    value &= _U64
    return value - (1 << 64) if value >> 63 else value


def _load(prog: Program, kind: str) -> tuple[int, int]:
    """Stage 1 as (op, param)."""
    op, param = prog.load.op, prog.load.param
    if op == "REG":
        if isinstance(param, int):
            return L_IMM, _s64(param)
        return L_REG, _REGS.index(param)
    if op == "IMM":
        return L_IMM, _s64(param)
    if op in ("STACK", "ARG"):
        if not 0 <= param < 1 << 40:
            raise _Unsupported
        return (L_STACK if op == "STACK" else L_ARG), param
    if op == "STACKP":
        return L_STACKP, 0
    if op == "RETVAL":
        return L_RETVAL, 0
    if op in ("ENTRY", "DURATION") and kind == "p":
        return L_FAULT, 0                  # _fetch: these loads fault on a kprobe
    raise _Unsupported                     # SYMBOL, COMM, DATA (and ENTRY/DURATION: the caller's)


def _tail(prog: Program, capture: bool = False, sext: bool = False) -> list[int]:
    """The store: store_op, size, count, offset, sext."""
    if prog.count > 64 or (capture and prog.count) or not -(1 << 62) < prog.offset < 1 << 62:
        raise _Unsupported
    if capture and prog.store not in ("MEM", "UMEM", "RAW", "SYMSTR"):
        raise _Unsupported
    if prog.store in ("MEM", "UMEM"):
        if not 1 <= prog.ftype.size <= 8:
            raise _Unsupported
        return [S_MEM, prog.ftype.size, prog.count, prog.offset, int(sext)]
    if prog.store in ("STRING", "USTRING"):
        return [S_STR, 1, prog.count, prog.offset, 0]
    if prog.store == "SYMSTR":
        return [S_RAW, 8, 0, 0, 0]
    if prog.store == "RAW":
        if not 1 <= prog.ftype.size <= 8:
            raise _Unsupported
        return [S_RAW, prog.ftype.size, 0, 0, int(sext)]
    raise _Unsupported


def _derefs(prog: Program) -> list[int]:
    if len(prog.derefs) > 64 or any(not -(1 << 62) < d < 1 << 62 for d in prog.derefs):
        raise _Unsupported
    return [len(prog.derefs), *prog.derefs]


def _program(load: tuple[int, int], prog: Program, capture: bool = False,
             sext: bool = False) -> list[int]:
    return [*load, *_derefs(prog), *_tail(prog, capture, sext)]


def _how(prog: Program) -> str:
    if prog.store in ("STRING", "USTRING"):
        return "str"
    return "sym" if prog.store == "SYMSTR" else "num"


_NOT_AT_ENTRY = ("ENTRY", "DURATION", "COMM", "DATA", "SYMBOL")


class _Captures:
    """A return probe's entry program (numbers only: a string would not fit the
    4096 bytes of ``ri.data``), and where each value lands in ``ri.data``."""

    def __init__(self) -> None:
        self.code: list[int] = []
        self.count = 0

    def add(self, program: list[int]) -> int:
        """The slot's byte offset past the entry time and function (16 bytes a slot)."""
        self.code += program
        self.count += 1
        return 16 * (self.count - 1)


def _compile_arg(f: Fetcher, kind: str, code: list[int], caps: _Captures) -> _Arg:
    prog: Program = f._prog
    op = prog.load.op
    if op in ("COMM", "DATA"):
        if prog.derefs or prog.store not in ("STRING", "USTRING") or (kind == "r" and prog.at_entry):
            raise _Unsupported
        return _Arg(f, "comm" if op == "COMM" else "data", 0, str(prog.load.param or ""))
    how = _how(prog)
    if not f.needs_entry:
        code += _program(_load(prog, kind), prog)
        return _Arg(f, how, prog.count)
    if prog.at_entry:                        # the whole argument at entry, its value at return
        if op == "DURATION":                 # _fetch: no duration at entry, a fault
            code += [L_FAULT, 0, 0, S_RAW, 8, 0, 0, 0]
            return _Arg(f, how, 0)
        if op in _NOT_AT_ENTRY or how == "str":
            raise _Unsupported
        at = caps.add(_program(_load(prog, "r"), prog, capture=True))
        code += [L_CAPT, at, 0, S_RAW, 8, 0, 0, 0]
        return _Arg(f, how, 0)
    if op == "DURATION":
        code += _program((L_DUR, 0), prog)
        return _Arg(f, how, prog.count)
    if op == "ENTRY":                        # the inner program at entry, the rest at return
        inner: Program = prog.load.param
        if (inner.bitfield is not None or inner.ftype.kind not in ("u", "s", "x")
                or inner.store not in ("RAW", "MEM", "UMEM") or inner.load.op in _NOT_AT_ENTRY):
            raise _Unsupported
        at = caps.add(_program(_load(inner, "r"), inner, capture=True,
                               sext=inner.ftype.kind == "s"))
    elif op == "ARG":
        at = caps.add([*_load(prog, "r"), 0, S_RAW, 8, 0, 0, 0])
    else:
        raise _Unsupported
    code += _program((L_CAPT, at), prog)
    return _Arg(f, how, prog.count)


def compile_line(fetchers: list[Fetcher], kind: str) -> Compiled | None:
    """The line's programs, or None when an argument keeps it on the Python path."""
    code: list[int] = []
    caps = _Captures()
    args: list[_Arg] = []
    try:
        for f in fetchers:
            if f._prog is None:
                return None
            args.append(_compile_arg(f, kind, code, caps))
    except _Unsupported:
        return None
    if caps.count > MAX_CAPTURES:
        return None
    nargs = sum(a.how not in ("comm", "data") for a in args)
    return Compiled(struct.pack(f"<{len(code)}q", *code), nargs,
                    struct.pack(f"<{len(caps.code)}q", *caps.code), caps.count, args)


# --- the ring and its drain ---------------------------------------------------------------
# emit(where, task, ts, ip, caller, entry_ts, values): where(addr) is _attach.place's
Emit = Callable[[Callable[[int], Any], Any, int, int, int, int, list[Any]], None]


class _RingState:
    """One machine's ring: the traces writing to it (by id) and their emitters."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.ring = NATIVE.Ring(RING_BYTES, self.drain, m)
        self.emitters: list[tuple[list[_Arg], Emit]] = []
        self._sym = _Symbols()

    def trace(self, compiled: Compiled, virtual: bool) -> Any | None:
        """The ``probes._native.Trace`` of a line (its records: ``trace.id``), or None
        when its records may be larger than a quarter of the ring (strings and
        arrays of them) or the ring has 65,536 lines already: the line keeps the
        Python path. :meth:`add` its emitter."""
        if len(self.emitters) > 0xFFFF:
            return None
        trace = NATIVE.Trace(self.ring, len(self.emitters), virtual, compiled.code, compiled.nargs,
                             compiled.ecode, compiled.ncapt)
        return trace if trace.max_record <= RING_BYTES // 4 else None

    def add(self, trace: Any, args: list[_Arg], emit: Emit) -> None:
        """The emitter of ``trace``'s records."""
        if trace.id != len(self.emitters):
            raise ValueError(f"trace {trace.id} is not the next of this ring ({len(self.emitters)})")
        self.emitters.append((args, emit))

    def drain(self) -> None:
        """Make the events of every record taken, in order. The symbols do not
        change within a batch (only a system call changes them), so each address
        is looked up once a batch."""
        data, ctxs = self.ring.take()
        pos, end = 0, len(data)
        sym = self._sym
        by_machine: dict[int, Callable[[int], Any]] = {}
        wheres = [by_machine.setdefault(id(m), _places(m)) for m, _ in ctxs]
        last = -1
        while pos < end:
            size, tid, cx, ts, ip, caller, entry_ts = _HEAD.unpack_from(data, pos)
            args, emit = self.emitters[tid]
            m, task = ctxs[cx]
            where = wheres[cx]
            if cx != last:
                last = cx
                sym.symbolize = m.symbolize
            values, _ = _decode(data, pos + _REC_HEAD, args, task, sym)
            emit(where, task, ts, ip, caller, entry_ts, values)
            pos += size


def _places(m: Machine) -> Callable[[int], Any]:
    """``_attach.place(m, addr)``, each address once a batch."""
    from ._attach import place

    cache: dict[int, Any] = {}

    def where(addr: int) -> Any:
        at = cache.get(addr)
        if at is None:
            at = cache[addr] = place(m, addr)
        return at
    return where


class _Symbols:
    """The FetchContext ``_convert`` and ``_symbolize`` need: the symbolizer."""

    symbolize: Callable[[int], str]


def _decode(data: bytes, pos: int, args: list[_Arg], task: Any, sym: _Symbols) -> tuple[list[Any], int]:
    """The values of one record's arguments (at ``pos``), and where the record ends."""
    values: list[Any] = []
    for a in args:
        how = a.how
        if how == "num" and not a.count:                # the common case first
            if _WORD.unpack_from(data, pos)[0] == _ARG_FAULT:
                values.append(None)
                pos += 8
                continue
            bad, v = _PAIR.unpack_from(data, pos)
            pos += 16
            values.append(None if bad else v & a.plain if a.plain else a.convert(sym, v))
            continue
        if how == "comm":
            values.append(task.comm[:MAX_STRING_SIZE - 1])
            continue
        if how == "data":
            values.append(a.text[:MAX_STRING_SIZE - 1])
            continue
        if _WORD.unpack_from(data, pos)[0] == _ARG_FAULT:
            values.append(None)
            pos += 8
            continue
        items: list[Any] = []
        for _ in range(a.count or 1):
            if how == "str":
                n = _WORD.unpack_from(data, pos)[0]
                pos += 8
                if n == _ELEM_FAULT:
                    items.append(None)
                    continue
                items.append(data[pos:pos + n].decode("utf-8", "replace"))
                pos += (n + 7) & ~7
                continue
            bad, v = _PAIR.unpack_from(data, pos)
            pos += 16
            items.append(None if bad else a.convert(sym, v))
        values.append(items if a.count else items[0])
    return values, pos


def ring_of(m: Machine) -> _RingState:
    """The ring of ``m`` (made on first use; drained at each ``on_pause``)."""
    state: _RingState | None = m.extensions.get(_RING_KEY)
    if state is None:
        state = m.extensions[_RING_KEY] = _RingState(m)
        m.on_pause.append(state.drain)
    return state


def flush(m: Machine) -> None:
    """Deliver the events of ``m``'s native lines still in its ring now."""
    state: _RingState | None = m.extensions.get(_RING_KEY)
    if state is not None and state.ring.pending:
        state.drain()
