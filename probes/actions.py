"""Native tracing actions: handlers whose work is done in C, at the hit.

A probe handler written in Python costs a trip into the interpreter per hit.
For the two aggregations the tools need most, the native core (issue 12)
offers handlers it runs itself, without entering Python (without even taking
the GIL) when nothing else at the site needs Python:

- :class:`Count`: a kprobe ``pre_handler`` that counts hits (``funccount``)::

      c = Count()
      register_kprobe(m, Kprobe("malloc", pre_handler=c))
      m.run(); print(c.value)

- :class:`Latency`: a kretprobe ``entry_handler``/``handler`` pair that stamps
  the time at entry (into ``ri.data``) and adds each call's duration to a log2
  histogram (``funclatency``)::

      lat = Latency()                           # the host's monotonic clock, in ns
      register_kretprobe(m, Kretprobe("fib", entry_handler=lat.entry_handler,
                                      handler=lat.handler, data_size=8))
      m.run(); print(lat.hist, lat.count, lat.total)

  ``Latency("virtual")`` times with the virtual clock of the machine that hit
  (``Machine.now``: instructions retired; set ``m.exact_clock``), also in C;
  ``Latency(now=fn)`` with any clock ``fn() -> ns``, with the GIL, to call it.

Both are ordinary handlers too: called from Python (a site shared with Python
handlers, a nested hit, the pure-Python path with ``KPE_NATIVE=0``) they do the
same, so the results never depend on which path ran. The classes below are the
pure-Python reference; with the native core built the names are the C types.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

from ._cnative import NATIVE

__all__ = ["Count", "Latency"]

_STAMP = struct.Struct("<Q")


class _PyCount:
    """A kprobe pre_handler that counts hits (``value``)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def __call__(self, kp: Any, regs: Any) -> int:
        self.value += 1
        return 0


class _PyLatency:
    """A log2 histogram of call durations: register ``entry_handler`` and
    ``handler`` on a kretprobe with ``data_size >= 8``.

    Args:
        now: the clock: None (the host's monotonic clock), ``"virtual"`` (the
            virtual clock of the machine that hit, ``regs.machine.now()``), or a
            callable returning ns.
        div: the histogram's unit in ns (1000: microseconds); a duration adds one
            to slot ``bit_length(ns // div)`` (1 for 0), bcc's ``bpf_log2l``.

    Attributes:
        hist: ``{slot: calls}``; ``count``: calls timed; ``total``: their ns;
        ``missed``: returns that found no stamp (``data_size < 8``).
    """

    def __init__(self, now: Callable[[], int] | str | None = None, div: int = 1) -> None:
        if div < 1 or (now is not None and now != "virtual" and not callable(now)):
            raise ValueError("Latency(now=None, 'virtual' or a callable, div >= 1)")
        self.now = now
        self.div = div
        self._slots: dict[int, int] = {}
        self.count = self.total = self.missed = 0

    def _clock(self, regs: Any) -> int:
        if self.now is None:
            return time.monotonic_ns()
        if self.now == "virtual":
            return int(regs.machine.now())
        return int(self.now())  # type: ignore[operator]

    @property
    def entry_handler(self) -> Callable[[Any, Any], int]:
        def stamp(ri: Any, regs: Any) -> int:
            if len(ri.data) >= 8:
                _STAMP.pack_into(ri.data, 0, self._clock(regs) & (2**64 - 1))
            return 0
        return stamp

    @property
    def handler(self) -> Callable[[Any, Any], int]:
        def record(ri: Any, regs: Any) -> int:
            t = self._clock(regs)
            if len(ri.data) < 8:
                self.missed += 1
                return 0
            ns = max(0, t - _STAMP.unpack_from(ri.data, 0)[0])
            slot = (ns // self.div).bit_length() or 1
            self._slots[slot] = self._slots.get(slot, 0) + 1
            self.count += 1
            self.total += ns
            return 0
        return record

    @property
    def hist(self) -> dict[int, int]:
        return dict(self._slots)


Count: Any = NATIVE.Count if NATIVE is not None else _PyCount
Latency: Any = NATIVE.Latency if NATIVE is not None else _PyLatency
