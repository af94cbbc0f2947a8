"""What a parsed probe-event line is: :class:`ProbeSpec`, :class:`FetchArg`, and the
compiled form of a fetch argument (:class:`Program`, the kernel's ``fetch_insn`` array).

A :class:`Program` keeps the kernel's stages (kernel/trace/trace_probe_tmpl.h
``process_fetch_insn_bottom``): one load, the dereferences of stage 2 (each
reads an ``unsigned long``), one store (stage 3), an optional bitfield
(stage 4) and an array count (the loop stage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ._tables import FetchType

__all__ = ["Insn", "Program", "FetchArg", "ProbeSpec"]


class Insn(NamedTuple):
    """One fetch instruction. Loads: ``REG`` (PtRegs attribute, or an int for the
    pt_regs slots PtRegs lacks), ``STACK`` n, ``STACKP``, ``RETVAL``, ``IMM`` value,
    ``COMM``, ``DATA`` text (``\\"...``), ``ARG`` n (0-based), ``SYMBOL`` (name,
    offset), and ours: ``ENTRY`` (a :class:`Program` run at function entry),
    ``DURATION``. Stage 2: ``DEREF``/``UDEREF`` offset."""

    op: str
    param: Any = None


@dataclass(frozen=True)
class Program:
    """A fetch argument, finalized (``finalize_fetch_insn`` in trace_probe.c).

    Attributes:
        load: the stage-1 instruction.
        derefs: the stage-2 dereference offsets, in order.
        store: ``RAW`` (the value itself), ``MEM``/``UMEM`` (``ftype.size`` bytes at
            value + ``offset``), ``STRING``/``USTRING`` (a NUL-terminated string at
            value + ``offset``, or the text of ``COMM``/``DATA``), ``SYMSTR``.
        offset: the store's offset (a final dereference folded into the store).
        ftype: the stored type (a bitfield's container type ``u8``..``u64``).
        count: array length, 0 for a scalar.
        bitfield: ``(lshift, rshift)`` of ``b<W>@<O>/<S>``, or None.
        at_entry: ``$entry(...)`` around the whole argument: all of it runs at entry.
    """

    load: Insn
    derefs: tuple[int, ...]
    store: str
    offset: int
    ftype: FetchType
    count: int = 0
    bitfield: tuple[int, int] | None = None
    at_entry: bool = False

    def symbols(self) -> tuple[str, ...]:
        """The ``@SYM`` names this program resolves (each once per hit)."""
        if self.load.op == "SYMBOL":
            return (self.load.param[0],)
        if self.load.op == "ENTRY":
            inner: Program = self.load.param
            return inner.symbols()
        return ()


@dataclass(frozen=True)
class FetchArg:
    """``NAME=FETCHARG[:TYPE]``: ``fetch`` is the expression's text, ``type`` the type's
    text (``"x64"`` when not given, ``"string"`` for ``$comm``; arrays keep ``[N]``)."""

    name: str
    fetch: str
    type: str = "x64"
    _prog: Program | None = field(default=None, repr=False, compare=False)
    _comm: str = field(default="", repr=False, compare=False)   # the kernel's parg->comm


@dataclass(frozen=True)
class ProbeSpec:
    """One line of ``kprobe_events``.

    Attributes:
        kind: ``"p"``, ``"r"`` (also ``p ... SYM%return``) or ``"-"`` (delete).
        group: the event group (``"kprobes"`` by default); a delete line without one
            has None: it matches the event in any group (``dyn_event_release``).
        event: the event name (default ``p_SYM_OFFS``, ``r_SYM_0``, ``p_0xADDR``); a
            delete line ``-:GRP/`` has ``""``: every event of the group.
        symbol: ``SYM`` or ``OBJECT:SYM`` without the offset, or None for an address.
        offset: the offset after the symbol.
        addr: the address of a MEMADDR probe, else None.
        maxactive: ``r<N>``'s N, 0 when not given.
        args: the fetch arguments.
    """

    kind: str
    group: str | None
    event: str
    symbol: str | None = None
    offset: int = 0
    addr: int | None = None
    maxactive: int = 0
    args: list[FetchArg] = field(default_factory=list)
    _line: str = field(default="", repr=False, compare=False)
    _cols: tuple[int, ...] = field(default=(), repr=False, compare=False)   # argv[i] columns
    _match: tuple[str, ...] = field(default=(), repr=False, compare=False)  # delete: SYM, ARGS

    @property
    def is_return(self) -> bool:
        return self.kind == "r"
