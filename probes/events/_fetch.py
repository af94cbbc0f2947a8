"""Fetching argument values at a hit, and printing them as the kernel's trace does.

The runtime of kernel/trace/trace_probe_tmpl.h (``process_fetch_insn_bottom``:
load, dereference, store, bitfield, array loop) and trace_kprobe.c
(``process_fetch_insn``: the loads from ``pt_regs``), with the print formats
of trace_probe.c (``PRINT_TYPE_FUNC_NAME``: ``%u``, ``%d``, ``0x%x``, ``'%c'``,
``%pS``, ``"%s"``, arrays as ``{a,b,c}``).

Faults. A read that fails (``read`` raising anything) never escapes: the
value becomes None, which :func:`format_value` prints as the kernel's
``(fault)``. The kernel prints ``(fault)`` for a string it could not read;
for a number whose read failed it still emits the record but the field holds
whatever the ring buffer had (``probe_mem_read`` does not clear it), and a
failed dereference on the way (stage 2) abandons the whole argument, arrays
included. Here every such value is None rather than stale bytes. As in the
kernel, ``$stackN`` and ``$argN`` beyond the registers read 0 outside the stack
(``regs_get_kernel_stack_nth``), not a fault. Strings are read up to their NUL,
at most 4095 bytes (``MAX_STRING_SIZE`` with its NUL), and decoded as UTF-8
with replacement characters.

Return probes. ``$argN``, ``$entry(...)`` and ``$duration`` need the function's
entry: ``capture(ctx)`` runs there (the kernel's ``store_trace_entry_data``)
and its result is what ``fetch`` finds in ``ctx.entry[fetcher.name]`` at the
return; ``$duration`` reads ``ctx.duration_ns``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._regs import PtRegs
from ._tables import MAX_STRING_SIZE
from ._types import FetchArg, Insn, Program

__all__ = ["FetchContext", "Fetcher", "compile_arg", "format_value"]

_U64 = (1 << 64) - 1
_PAGE = 4096
_ARG_REGS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")


@dataclass
class FetchContext:
    """What a fetch may look at, at one hit.

    Attributes:
        regs: the registers at the hit.
        read: ``read(addr, size) -> bytes`` of guest memory; may raise (a fault).
        symbolize: ``addr -> "sym+0xoff"``.
        resolve: ``name -> addr`` for ``@SYM``; may raise (a fault).
        comm: the task's name (``$comm``).
        retval: the return value (``$retval``); None: ``regs.rax``.
        entry: return probes: ``fetcher.name -> capture(ctx)`` taken at entry.
        duration_ns: return probes: the call's duration (``$duration``).
    """

    regs: PtRegs
    read: Callable[[int, int], bytes]
    symbolize: Callable[[int], str]
    resolve: Callable[[str], int]
    comm: str = ""
    retval: int | None = None
    entry: dict[str, Any] | None = None
    duration_ns: int | None = None


class Fetcher:
    """One compiled fetch argument.

    Attributes:
        name, type: the argument's name and type text (``"u8[4]"``).
        needs_entry: a return probe's argument that needs :meth:`capture` at entry.
        hex, signed: how numbers print (``xN``: ``0x%x``; ``sN``: ``%d``).
        style: the print format: ``u`` ``s`` ``x`` ``char`` ``symbol`` ``string``.
        count: array length (values are lists), 0 for a scalar.
        symbols: the ``@SYM`` names it resolves at each hit (check them at attach).
    """

    __slots__ = ("name", "type", "needs_entry", "hex", "signed", "count", "symbols", "style",
                 "_prog")

    def __init__(self, arg: FetchArg, kind: str) -> None:
        prog = arg._prog
        if prog is None or kind not in ("p", "r"):
            raise ValueError(f"compile_arg({arg.name!r}, {kind!r}): needs a parsed argument "
                             "and a kind 'p' or 'r'")
        self.name = arg.name
        self.type = arg.type
        self.style = prog.ftype.kind
        self.hex = prog.ftype.hex
        self.signed = prog.ftype.signed
        self.count = prog.count
        self.symbols = prog.symbols()
        self.needs_entry = kind == "r" and (prog.at_entry or
                                            prog.load.op in ("ARG", "ENTRY", "DURATION"))
        self._prog = prog

    def capture(self, ctx: FetchContext) -> Any:
        """At the function's entry: what :meth:`fetch` needs at the return (None if nothing)."""
        prog = self._prog
        if not self.needs_entry:
            return None
        if prog.at_entry:
            return _run(prog, ctx, _load(prog.load, ctx))
        if prog.load.op == "DURATION":
            return 0
        if prog.load.op == "ENTRY":
            inner: Program = prog.load.param
            return _run(inner, ctx, _load(inner.load, ctx))
        return _load(prog.load, ctx)

    def fetch(self, ctx: FetchContext) -> Any:
        """The value at the hit: int, str, list, or None for a fault."""
        prog = self._prog
        if not self.needs_entry:
            return _run(prog, ctx, _load(prog.load, ctx))
        if prog.load.op == "DURATION":
            return _run(prog, ctx, ctx.duration_ns)
        captured = ctx.entry.get(self.name) if ctx.entry is not None else None
        return captured if prog.at_entry else _run(prog, ctx, captured)

    def __repr__(self) -> str:
        return f"<Fetcher {self.name}:{self.type}>"


def compile_arg(arg: FetchArg, kind: str) -> Fetcher:
    """The runtime form of ``arg`` on a ``kind`` (``"p"`` or ``"r"``) probe."""
    return Fetcher(arg, kind)


def format_value(fetcher: Fetcher, value: Any) -> str:
    """The kernel's trace text of a fetched value (``0x1f``, ``-3``, ``"str"``, ``{1,2}``)."""
    if isinstance(value, list):
        return "{" + ",".join(_format_one(fetcher.style, v) for v in value) + "}"
    return _format_one(fetcher.style, value)


def _format_one(style: str, value: Any) -> str:
    if value is None:
        return "(fault)"
    if style == "string":
        return f'"{value}"'
    if style == "char":
        return f"'{value}'"
    if style == "x":
        return f"0x{value:x}"
    return str(value)


# --- stage 1: loads -------------------------------------------------------------------
def _stack_nth(ctx: FetchContext, n: int) -> int:
    """``regs_get_kernel_stack_nth``: 0 when the word is not readable."""
    value = _read_ulong(ctx, ctx.regs.rsp + 8 * n)
    return 0 if value is None else value


def _argument(ctx: FetchContext, n: int) -> int:
    """``regs_get_kernel_argument`` (System V: six registers, then the stack)."""
    if n < len(_ARG_REGS):
        return int(getattr(ctx.regs, _ARG_REGS[n]))
    return _stack_nth(ctx, n - len(_ARG_REGS) + 1)


def _symbol(ctx: FetchContext, param: tuple[str, int]) -> int | None:
    try:
        return (ctx.resolve(param[0]) + param[1]) & _U64
    except Exception:
        return None


def _register(ctx: FetchContext, param: str | int) -> int:
    return param if isinstance(param, int) else int(getattr(ctx.regs, param)) & _U64


_LOADS: dict[str, Callable[[FetchContext, Any], Any]] = {
    "REG": _register,
    "STACK": _stack_nth,
    "STACKP": lambda ctx, _: ctx.regs.rsp,
    "RETVAL": lambda ctx, _: (ctx.retval if ctx.retval is not None else ctx.regs.rax) & _U64,
    "IMM": lambda ctx, value: value,
    "COMM": lambda ctx, _: ctx.comm,
    "DATA": lambda ctx, text: text,
    "ARG": _argument,
    "SYMBOL": _symbol,
    # Return-probe loads are captured (Fetcher.capture); compiled for a kprobe they fault.
    "ENTRY": lambda ctx, _: None,
    "DURATION": lambda ctx, _: None,
}


def _load(insn: Insn, ctx: FetchContext) -> Any:
    return _LOADS[insn.op](ctx, insn.param)


# --- stages 2 to 5 -----------------------------------------------------------------------
def _run(prog: Program, ctx: FetchContext, val: Any) -> Any:
    """Dereference, then store: the value of ``prog`` from its stage-1 value ``val``."""
    if val is None:
        return None
    lval = val
    for offset in prog.derefs:
        lval = val
        val = _read_ulong(ctx, val + offset)
        if val is None:
            return None
    if prog.store in ("STRING", "USTRING"):
        if isinstance(val, str):                       # $comm, \"text"
            return val[:MAX_STRING_SIZE - 1]
        if prog.count:
            return _string_array(prog, ctx, val, lval)
        return _read_string(ctx, val + prog.offset)
    if prog.store == "SYMSTR":
        return _symbolize(ctx, val)
    if prog.store == "RAW":
        return _convert(prog, ctx, val & _mask(prog.ftype.size))
    size = prog.ftype.size
    base = val + prog.offset
    values = [_read_uint(ctx, base + i * size, size) for i in range(prog.count or 1)]
    converted = [None if v is None else _convert(prog, ctx, v) for v in values]
    return converted if prog.count else converted[0]


def _string_array(prog: Program, ctx: FetchContext, val: int, lval: int) -> list[Any]:
    """``string[N]``: N ``char *`` from where the last dereference read (the kernel
    re-runs that dereference 8 bytes further each time)."""
    out = [_read_string(ctx, val)]
    for i in range(1, prog.count):
        ptr = _read_ulong(ctx, lval + 8 * i + prog.derefs[-1]) if prog.derefs else None
        out.append(None if ptr is None else _read_string(ctx, ptr))
    return out


def _convert(prog: Program, ctx: FetchContext, value: int) -> Any:
    if prog.bitfield is not None:
        lshift, rshift = prog.bitfield
        value = ((value << lshift) & _mask(prog.ftype.size)) >> rshift
    kind = prog.ftype.kind
    if kind == "s" and value >> (prog.ftype.size * 8 - 1):
        return value - (1 << prog.ftype.size * 8)
    if kind == "char":
        return chr(value)
    if kind == "symbol":
        return _symbolize(ctx, value)
    return value


def _mask(size: int) -> int:
    return (1 << size * 8) - 1


def _symbolize(ctx: FetchContext, addr: int) -> str | None:
    try:
        return ctx.symbolize(addr)
    except Exception:
        return None


def _read_uint(ctx: FetchContext, addr: int, size: int) -> int | None:
    addr &= _U64
    try:
        data = ctx.read(addr, size)
    except Exception:
        return None
    if len(data) != size:
        return None
    return int.from_bytes(data, "little")


def _read_ulong(ctx: FetchContext, addr: int) -> int | None:
    return _read_uint(ctx, addr, 8)


def _read_string(ctx: FetchContext, addr: int) -> str | None:
    """``strncpy_from_kernel_nofault``: up to the NUL, page by page, at most 4095 bytes."""
    addr &= _U64
    out = bytearray()
    limit = MAX_STRING_SIZE - 1
    while len(out) < limit:
        size = min(_PAGE - addr % _PAGE, limit - len(out))
        try:
            chunk = bytes(ctx.read(addr, size))
        except Exception:
            return None
        nul = chunk.find(b"\0")
        if nul >= 0:
            out += chunk[:nul]
            break
        if len(chunk) != size:
            return None
        out += chunk
        addr = (addr + size) & _U64
    return out.decode("utf-8", "replace")
