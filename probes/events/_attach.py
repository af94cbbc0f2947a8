"""Probe events on a machine: a parsed line becomes a kprobe or kretprobe whose
handlers fetch the arguments and hand one :class:`Event` per hit to a sink
(kernel/trace/trace_kprobe.c: ``kprobe_dispatcher``, ``kretprobe_dispatcher``,
``__kprobe_trace_func``).

A return probe pairs every return with its own entry (the kretprobe's
``entry_handler`` and its instance): ``$argN``, ``$entry(...)`` and ``$duration``
are the values of *that* call's entry, right under recursion and threads. The
entry's values are kept per instance (``ri``), like ``ri.data`` but for any
Python value (a string fetched at entry).

Errors that need the machine are raised here, as the kernel raises them at
registration: an unknown symbol (``BAD_PROBE_ADDR``), a return probe not at a
function's entry (``BAD_RETPROBE``), a probe inside an instruction
(``BAD_INSN_BNDRY``), an unknown ``@SYM`` or a refused address (``FAIL_REG_PROBE``).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

from emu import Machine
from emu._memory import PROT_X

from .._cnative import NATIVE
from .._errors import ProbeError
from .._kprobe import Kprobe
from .._kretprobe import Kretprobe, KretprobeInstance
from .._regs import PtRegs
from .._report import stack_trace
from ._aggregate import CountSink, Log2Sink
from ._errors import ParseError
from ._event import Event
from ._fetch import FetchContext, Fetcher, compile_arg, format_value
from ._native import compile_line, flush, ring_of
from ._parse import check_append, parse
from ._types import ProbeSpec

__all__ = ["attach", "EventHandle", "Sink", "CLOCKS", "DEFAULT_MAXACTIVE", "NATIVE_EVENTS"]

Sink = Callable[[Event], Any]
CLOCKS = ("virtual", "host")
DEFAULT_MAXACTIVE = 0          # 0: the kretprobe's default (the kernel's max(10, 2 * NR_CPUS))
_EXT_KEY = "probes.events"
# Lines whose fetch arguments compile run them in C (probes.events._native) when
# the native core is built; False keeps every line on the Python path (tests
# compare the two).
NATIVE_EVENTS = True


class EventHandle:
    """One attached probe event; :meth:`detach` removes it.

    Attributes:
        spec: the parsed line.
        hits: events made (the kernel's ``nhit``: ``kprobe_dispatcher`` and
            ``kretprobe_dispatcher`` count the hits that reach them).
        missed: hits that made no event (no free instance, or inside a handler).
        native: the line's fetches run in C and its events are made in batches
            (:mod:`probes.events._native`).
    """

    native = False

    def __init__(self, m: Machine, spec: ProbeSpec, probe: Kprobe | Kretprobe) -> None:
        self.m = m
        self.spec = spec
        self.probe = probe
        self.events = 0               # events made
        self.entries = 0              # a return probe's entries that took an instance

    @property
    def name(self) -> str:
        return f"{self.spec.group}/{self.spec.event}"

    @property
    def missed(self) -> int:
        p = self.probe
        if isinstance(p, Kretprobe):
            return p.nmissed + p.kp.nmissed
        return p.nmissed

    @property
    def hits(self) -> int:
        """The kernel's ``nhit``: hits that reached the event's handler (a return
        probe's returns), the ``kprobe_profile`` hits column; misses are apart."""
        return self.events

    def detach(self) -> None:
        """Unregister the probe; a call in flight still returns right, with no event."""
        from .._api import unregister_kprobe, unregister_kretprobe

        if isinstance(self.probe, Kretprobe):
            unregister_kretprobe(self.m, self.probe)
        else:
            unregister_kprobe(self.m, self.probe)
        registry = _registry(self.m)
        key = (self.spec.group, self.spec.event)
        if self in registry.get(key, []):
            registry[key].remove(self)
            if not registry[key]:
                del registry[key]

    def __repr__(self) -> str:
        return f"<EventHandle {self.name} {self.spec._line!r} hits={self.hits} missed={self.missed}>"


def _registry(m: Machine) -> dict[tuple[str | None, str], list[EventHandle]]:
    return m.extensions.setdefault(_EXT_KEY, {})


def attached(m: Machine) -> list[EventHandle]:
    """Every event attached to ``m``, in attach order per event."""
    return [h for handles in _registry(m).values() for h in handles]


def attach(m: Machine, line: str, sink: Sink, *, clock: str = "virtual", maxactive: int | None = None,
           stack: bool = False) -> EventHandle:
    """Attach the probe event ``line`` to ``m``: each hit calls ``sink(Event)``.

    Args:
        m: the machine (probes on ``OBJECT:SYM`` wait for the object to be mapped).
        line: a ``kprobe_events`` line (``p:grp/ev SYM[+offs] args``, ``r...``, ``-:grp/ev``).
        sink: called with one :class:`Event` per hit. A :class:`CountSink` on an
            entry line, and a :class:`Log2Sink` of ``$duration`` on a return
            line that fetches only that, aggregate in C instead: no event is
            made (``stack`` asks for events, so it keeps the Python path).
        clock: ``"virtual"`` (instructions retired, 1 ns each: sets ``m.exact_clock``)
            or ``"host"`` (the host's monotonic clock).
        maxactive: a return probe's instances when the line names no ``rN`` (None:
            the kernel's default).
        stack: give each event a ``stack`` attribute (return addresses, innermost
            first, as :func:`probes.stack_trace` finds them).

    Returns:
        The handle (for a ``-:`` line, the detached one).

    Raises:
        ParseError: the kernel's error code and column, from the text or the machine.
        ProbeError: a ``-:`` line names no attached event (ENOENT).
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    spec = parse(line)
    if spec.kind == "-":
        return _delete(m, spec)
    registry = _registry(m)
    check_append([h.spec for h in registry.get((spec.group, spec.event), [])], spec)
    fetchers = [compile_arg(arg, spec.kind) for arg in spec.args]
    _check_machine(m, spec, fetchers)
    handle: EventHandle | None = None
    if isinstance(sink, CountSink | Log2Sink) and not stack and sink.native_for(spec, fetchers):
        handle = _attach_native(m, spec, sink, clock, maxactive)
    elif NATIVE is not None and NATIVE_EVENTS and not stack:
        handle = _attach_trace(m, spec, fetchers, sink, clock, maxactive)
    if handle is None:                  # the Python path
        if clock == "virtual":
            m.exact_clock = True
        now = m.now if clock == "virtual" else time.monotonic_ns
        build = _Builder(m, spec, fetchers, sink, now, stack)
        handle = build.register(maxactive)
    registry.setdefault((spec.group, spec.event), []).append(handle)
    return handle


class _NativeHandle(EventHandle):
    """An event aggregated in C (:mod:`probes.events._aggregate`): no events are
    made; ``hits`` are what the action counted."""

    def __init__(self, m: Machine, spec: ProbeSpec, probe: Kprobe | Kretprobe, action: Any) -> None:
        super().__init__(m, spec, probe)
        self.action = action

    @property
    def hits(self) -> int:
        return int(self.action.value if isinstance(self.probe, Kprobe) else self.action.count)


def _attach_native(m: Machine, spec: ProbeSpec, sink: CountSink | Log2Sink, clock: str,
                   maxactive: int | None) -> EventHandle:
    """The line's probe with the sink's native action as its handler."""
    probe: Kprobe | Kretprobe
    if isinstance(sink, CountSink):      # counting needs no clock
        action = sink.count()
        probe = _kprobe(spec, action)
    else:
        if clock == "virtual":
            m.exact_clock = True
        action = sink.latency("virtual" if clock == "virtual" else None)
        probe = _kretprobe(spec, maxactive, action.entry_handler, action.handler, 8)
    handle = _NativeHandle(m, spec, probe, action)
    _register(m, spec, probe)
    return handle


def _kprobe(spec: ProbeSpec, pre_handler: Any) -> Kprobe:
    """The probe of an entry line."""
    return Kprobe(symbol_name=spec.symbol, addr=spec.addr if spec.symbol is None else None,
                  offset=spec.offset, pre_handler=pre_handler)


def _kretprobe(spec: ProbeSpec, maxactive: int | None, entry_handler: Any, handler: Any,
               data_size: int = 0) -> Kretprobe:
    """The probe of a return line: ``rN``'s instances, else ``maxactive``'s, else the default."""
    return Kretprobe(symbol_name=spec.symbol, addr=spec.addr, entry_handler=entry_handler,
                     handler=handler, data_size=data_size,
                     maxactive=spec.maxactive or (maxactive or DEFAULT_MAXACTIVE))


def _register(m: Machine, spec: ProbeSpec, probe: Kprobe | Kretprobe) -> None:
    """Register the line's probe; a refusal is the kernel's error in the line."""
    from .._api import register_kprobe, register_kretprobe

    where = spec._cols[1] if len(spec._cols) > 1 else 0
    try:
        if isinstance(probe, Kretprobe):
            register_kretprobe(m, probe)
        else:
            register_kprobe(m, probe)
    except ProbeError as exc:
        code = {errno.EILSEQ: "BAD_INSN_BNDRY", errno.ENOENT: "BAD_PROBE_ADDR"}.get(
            exc.errno or 0, "FAIL_REG_PROBE")
        raise ParseError(code, where, spec._line) from exc


def _delete(m: Machine, spec: ProbeSpec) -> EventHandle:
    """``dyn_event_release``: every event the line matches (``-:GRP/`` all of a
    group, ``-:EV`` that name in any group), and with ``SYM [ARGS]`` after the name
    only the events whose probe and arguments begin so
    (``trace_kprobe_match_command_head``)."""
    registry = _registry(m)
    matched: list[EventHandle] = []
    for (group, event), handles in list(registry.items()):
        if (spec.group is None or spec.group == group) and (not spec.event or spec.event == event):
            matched += [h for h in handles if _head_matches(h.spec, spec._match)]
    if not matched:
        raise ProbeError(errno.ENOENT,
                         f"no probe event {spec.group or '*'}/{spec.event or '*'} is attached")
    for h in matched:
        h.detach()
    return matched[-1]


def _head_matches(spec: ProbeSpec, head: tuple[str, ...]) -> bool:
    if not head:
        return True
    words = spec._line.split()[1:]         # the probe point, then each argument
    return tuple(words[:len(head)]) == head


def _check_machine(m: Machine, spec: ProbeSpec, fetchers: list[Fetcher]) -> None:
    """The kernel's registration-time errors, placed in the line as it places them."""
    where = spec._cols[1] if len(spec._cols) > 1 else 0
    for i, f in enumerate(fetchers):
        for name in f.symbols:
            if ":" not in name and m.symbols.get_symbol(name) is None:
                raise ParseError("FAIL_REG_PROBE", spec._cols[i + 2] if len(spec._cols) > i + 2 else 0,
                                 spec._line)
    if spec.symbol is not None and ":" in spec.symbol and m.symbols.get_symbol(spec.symbol) is None:
        return                     # OBJECT:SYM, pending until the object is mapped
    if spec.symbol is not None:
        sym = m.symbols.get_symbol(spec.symbol)
        if sym is None:
            raise ParseError("BAD_PROBE_ADDR", where, spec._line)
        addr = sym.addr + spec.offset
    else:
        assert spec.addr is not None
        addr = spec.addr
    region = m.mem.region_at(addr)
    if region is None or not region.perms & PROT_X:
        raise ParseError("BAD_PROBE_ADDR" if spec.symbol is None else "FAIL_REG_PROBE", where, spec._line)
    if spec.is_return:
        func = m.symbols.lookup(addr)
        if func is None or func.addr != addr:
            raise ParseError("BAD_RETPROBE", where, spec._line)


class _Builder:
    """The handlers of one event."""

    def __init__(self, m: Machine, spec: ProbeSpec, fetchers: list[Fetcher], sink: Sink,
                 now: Callable[[], int], stack: bool) -> None:
        self.m, self.spec, self.fetchers, self.sink, self.now = m, spec, fetchers, sink, now
        self.stack = stack
        self.entry_fetchers = [f for f in fetchers if f.needs_entry]
        self.handle: EventHandle | None = None
        # Per instance: (entry ts, function address, captured values). Instances are
        # preallocated and reused, so this holds at most maxactive entries.
        self.entries: dict[KretprobeInstance, tuple[int, int, dict[str, Any]]] = {}

    def register(self, maxactive: int | None) -> EventHandle:
        spec = self.spec
        probe: Kprobe | Kretprobe
        if spec.is_return:
            probe = _kretprobe(spec, maxactive, self._on_entry, self._on_return)
        else:
            probe = _kprobe(spec, self._on_hit)
        self.handle = EventHandle(self.m, spec, probe)
        _register(self.m, spec, probe)
        return self.handle

    # --- the hit paths ------------------------------------------------------------------------
    def _machine(self, regs: PtRegs) -> Machine:
        """The machine that hit: the one attached to, or a process it followed
        into (probes._follow)."""
        m = regs.machine
        return self.m if m is None else m

    def _now(self, regs: PtRegs) -> int:
        if self.now == self.m.now:          # the virtual clock: the hitting machine's
            return self._machine(regs).now()
        return self.now()

    def _context(self, regs: PtRegs) -> FetchContext:
        m = self._machine(regs)
        return FetchContext(regs=regs, read=m.read, symbolize=m.symbolize, resolve=m.resolve,
                            comm=m.current_task.comm)

    def _emit(self, ts: int, kind: str, addr: int, values: list[Any], regs: PtRegs, *,
              caller: int | None = None, entry_ts: int | None = None) -> None:
        flush(self.m)               # the native lines' events that came first go first
        m = self._machine(regs)
        ev = _event(m.current_task, self.spec, self.fetchers, ts, kind, place(m, addr), values,
                    caller=place(m, caller) if caller is not None else None, entry_ts=entry_ts)
        if self.stack:
            ev.stack = stack_trace(m, regs)
        assert self.handle is not None
        self.handle.events += 1
        self.sink(ev)

    def _on_hit(self, kp: Kprobe, regs: PtRegs) -> int:
        ts = self._now(regs)
        ctx = self._context(regs)
        values = [f.fetch(ctx) for f in self.fetchers]
        self._emit(ts, "p", regs.rip, values, regs)
        return 0

    def _on_entry(self, ri: KretprobeInstance, regs: PtRegs) -> int:
        assert self.handle is not None
        self.handle.entries += 1
        ctx = self._context(regs)
        captured = {f.name: f.capture(ctx) for f in self.entry_fetchers}
        self.entries[ri] = (self._now(regs), regs.rip, captured)
        return 0

    def _on_return(self, ri: KretprobeInstance, regs: PtRegs) -> None:
        ts = self._now(regs)
        entry_ts, func_addr, captured = self.entries.get(ri, (ts, 0, {}))
        ctx = self._context(regs)
        ctx.entry = captured
        ctx.duration_ns = ts - entry_ts
        values = [f.fetch(ctx) for f in self.fetchers]
        self._emit(ts, "r", func_addr or (ri.rp.addr or 0), values, regs, caller=regs.rip,
                   entry_ts=entry_ts)


Place = tuple[str, str, str]


def place(m: Machine, addr: int) -> Place:
    """How an event shows ``addr``: ``sym+0xoff``, with ``/0xsize`` (``%pS``), and the
    function's name."""
    func = m.symbols.lookup(addr)
    return (m.symbolize(addr), _with_size(m, addr),
            func.name if func is not None else f"{addr:#x}")


def _event(task: Any, spec: ProbeSpec, fetchers: list[Fetcher], ts: int, kind: str, at: Place,
           values: list[Any], *, caller: Place | None = None, entry_ts: int | None = None) -> Event:
    """The event of one hit of ``spec`` by ``task`` at ``at``, from its fetched values."""
    args = {f.name: v for f, v in zip(fetchers, values, strict=True)}
    return Event(ts, task.tid, task.comm, spec.group or "kprobes", spec.event, kind,
                 at[0], caller[0] if caller is not None else None, args, entry_ts=entry_ts,
                 texts=lambda: [f"{f.name}={format_value(f, v)}" for f, v in zip(fetchers, values,
                                                                                 strict=True)],
                 ip_text=at[1], caller_text=caller[1] if caller is not None else "", func=at[2],
                 pid=task.pid)


class _TraceHandle(EventHandle):
    """An event whose fetches run in C (:mod:`probes.events._native`): its
    events are made when the machine's ring is drained; ``hits`` counts the
    records written, so it is final at once."""

    native = True

    def __init__(self, m: Machine, spec: ProbeSpec, probe: Kprobe | Kretprobe, trace: Any) -> None:
        self.trace = trace
        super().__init__(m, spec, probe)

    @property
    def entries(self) -> int:
        return int(self.trace.entries)

    @entries.setter
    def entries(self, value: int) -> None:        # EventHandle.__init__'s 0: counted in C
        pass

    @property
    def hits(self) -> int:
        return int(self.trace.hits)

    def detach(self) -> None:
        flush(self.m)                # its records become events before it goes
        super().detach()


def _attach_trace(m: Machine, spec: ProbeSpec, fetchers: list[Fetcher], sink: Sink, clock: str,
                  maxactive: int | None) -> EventHandle | None:
    """The line's probe with a native ``Trace`` as its handlers (the ring's drain
    makes its events), or None when the line keeps the Python path."""
    compiled = compile_line(fetchers, spec.kind)
    if compiled is None:
        return None
    state = ring_of(m)
    trace = state.trace(compiled, clock == "virtual")
    if trace is None:
        return None
    if clock == "virtual":
        m.exact_clock = True
    handle: EventHandle | None = None
    probe: Kprobe | Kretprobe

    def emit(where: Callable[[int], Place], task: Any, ts: int, ip: int, caller: int,
             entry_ts: int, values: list[Any]) -> None:
        assert handle is not None
        if spec.is_return:
            ev = _event(task, spec, fetchers, ts, "r", where(ip or (probe.addr or 0)), values,
                        caller=where(caller), entry_ts=entry_ts)
        else:
            ev = _event(task, spec, fetchers, ts, "p", where(ip), values)
        handle.events += 1
        sink(ev)

    state.add(trace, compiled.args, emit)
    if spec.is_return:
        probe = _kretprobe(spec, maxactive, trace.entry_handler, trace.handler, trace.data_size)
    else:
        probe = _kprobe(spec, trace)
    handle = _TraceHandle(m, spec, probe, trace)
    _register(m, spec, probe)
    return handle


def _with_size(m: Machine, addr: int | None) -> str:
    """``%pS``: ``sym+0xoff/0xsize``."""
    if addr is None:
        return ""
    sym = m.symbols.lookup(addr)
    if sym is None:
        return f"{addr:#x}"
    return f"{sym.name}+{addr - sym.addr:#x}/{sym.size:#x}"


def parse_and_check(m: Machine, line: str) -> ProbeSpec:
    """Parse ``line`` and raise the machine's errors too, without attaching."""
    spec = parse(line)
    if spec.kind != "-":
        _check_machine(m, spec, [compile_arg(a, spec.kind) for a in spec.args])
    return spec
