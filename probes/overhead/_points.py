"""What ``attach(m)`` registered, as probe points, and the probes built on them for
measuring: the no-op twin of each probe, and counters of its hits.

The twin of a probe is the same probe point and kind with handlers that do
nothing: a kprobe with a no-op ``pre_handler`` (and a no-op ``post_handler`` when
the probe has one, since that makes the core single-step), or a kretprobe with a
no-op ``handler``, no ``entry_handler`` and the same ``maxactive``, on a machine
with the same ``debug.kprobes-optimization`` setting. Its cost is the probe
mechanism's; what the real probe costs on top is its handlers'.

A probe's hits are the kernel's ``nhit`` (kernel/trace/trace_kprobe.c,
``kprobe_dispatcher`` and ``kretprobe_dispatcher``): the calls of its handler,
a return probe's return handler; misses are ``nmissed`` (the kretprobe's and
its entry kprobe's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emu import Machine

from .._api import register_kprobe, register_kretprobe
from .._control import set_optimization
from .._core import _EXT_KEY as _KPROBES_KEY
from .._kprobe import Kprobe
from .._kretprobe import Kretprobe
from .._pending import pending_probes

__all__ = ["ProbePoint", "HitCounter", "registered_probes", "point_of", "register_twin", "count_hits"]

Probe = Kprobe | Kretprobe


@dataclass(frozen=True)
class ProbePoint:
    """Where a probe is and of which kind.

    Attributes:
        kind: ``"p"`` (a kprobe) or ``"r"`` (a kretprobe).
        symbol: ``SYM`` or ``OBJECT:SYM``, or None for an absolute address.
        addr: the absolute address when ``symbol`` is None.
        offset: the offset after ``symbol``.
        maxactive: a kretprobe's instances.
        post: the kprobe has a ``post_handler`` (the core then single-steps).
        optimized: the machine serves probes optimized (``set_optimization``).
    """

    kind: str
    symbol: str | None
    addr: int | None = None
    offset: int = 0
    maxactive: int = 0
    post: bool = False
    optimized: bool = False

    def resolve(self, m: Machine) -> int | None:
        """The address on ``m``, or None while the symbol's object is not mapped."""
        if self.symbol is None:
            return self.addr
        sym = m.symbols.get_symbol(self.symbol)
        return None if sym is None else sym.addr + self.offset

    def text(self) -> str:
        """The probe-event form: ``p fib+0x4``, ``r libc.so.6:malloc``, ``p 0x401000``."""
        if self.symbol is None:
            return f"{self.kind} {self.addr or 0:#x}"
        where = f"{self.symbol}+{self.offset:#x}" if self.offset else self.symbol
        return f"{self.kind} {where}"


def registered_probes(m: Machine) -> list[Probe]:
    """Every kprobe and kretprobe registered on ``m``, armed (by address) or pending."""
    found: list[Probe] = []
    mgr = m.extensions.get(_KPROBES_KEY)
    if mgr is not None:
        for addr in sorted(mgr.sites):
            for kp in mgr.sites[addr].probes:
                probe = kp._kretprobe or kp
                if probe not in found:
                    found.append(probe)
    for probe, _reason in pending_probes(m):
        if probe not in found:
            found.append(probe)
    return found


def point_of(m: Machine, probe: Probe) -> ProbePoint:
    """The :class:`ProbePoint` of a probe registered on ``m``."""
    mgr = m.extensions.get(_KPROBES_KEY)
    optimized = bool(mgr is not None and mgr.optimize)
    kp = probe.kp if isinstance(probe, Kretprobe) else probe
    if kp.symbol_name is not None:
        symbol, addr, offset = kp.symbol_name, None, kp.offset
    else:                            # registered: kp.addr already holds the offset
        symbol, offset = None, 0
        addr = (kp.addr or 0) + (0 if kp.registered else kp.offset)
    if isinstance(probe, Kretprobe):
        return ProbePoint("r", symbol, addr, offset, maxactive=probe.maxactive, optimized=optimized)
    return ProbePoint("p", symbol, addr, offset, post=kp.post_handler is not None, optimized=optimized)


def _noop(*_: object) -> None:
    return None


def _twin(point: ProbePoint, handler: Callable[..., Any] = _noop) -> Probe:
    addr = point.addr if point.symbol is None else None
    if point.kind == "r":
        return Kretprobe(point.symbol, addr, handler=handler, maxactive=point.maxactive)
    return Kprobe(point.symbol, addr, point.offset if point.symbol else 0, pre_handler=handler,
                  post_handler=_noop if point.post else None)


def register_twin(m: Machine, point: ProbePoint, handler: Callable[..., Any] = _noop) -> Probe:
    """Register on ``m`` the no-op probe of ``point`` (``handler`` as its handler)."""
    if point.optimized:
        set_optimization(m, True)
    probe = _twin(point, handler)
    if isinstance(probe, Kretprobe):
        register_kretprobe(m, probe)
    else:
        register_kprobe(m, probe)
    return probe


class HitCounter:
    """Counts the handler runs of some probes (see the module docstring)."""

    def __init__(self) -> None:
        self.calls = 0
        self.probes: list[Probe] = []

    def wrap(self, fn: Callable[..., Any] | None) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            self.calls += 1
            return None if fn is None else fn(*args)
        return counted

    @property
    def hits(self) -> int:
        return self.calls

    @property
    def missed(self) -> int:
        total = 0
        for p in self.probes:
            total += p.nmissed + (p.kp.nmissed if isinstance(p, Kretprobe) else 0)
        return total


def count_hits(probes: list[Probe]) -> HitCounter:
    """Make the handlers of ``probes`` count their runs (for a counting run only:
    the wrapper costs a call). A probe's handler is read at each hit, so this
    takes effect on registered probes too."""
    counter = HitCounter()
    for p in probes:
        counter.probes.append(p)
        if isinstance(p, Kretprobe):
            p.handler = counter.wrap(p.handler)
        elif p.pre_handler is not None or p.post_handler is None:
            p.pre_handler = counter.wrap(p.pre_handler)
        else:
            p.post_handler = counter.wrap(p.post_handler)
    return counter
