"""Sinks that aggregate, and that :func:`attach` keeps in C when it can.

A tool that only counts a line's events (``funccount``) or only histograms one
number of them (``funclatency``'s ``$duration``) needs no :class:`Event` at
all. :func:`attach` gives such a sink a native action (:mod:`probes.actions`)
as the probe's handler when the line asks for nothing else: the hit path then
counts, or stamps and histograms, without building an event and, on the
native core, without entering Python. Otherwise (a line with other arguments,
a clock the action cannot read) the sink is an ordinary one and aggregates the
events it is handed: the figures are the same either way.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..actions import Count, Latency
from ._event import Event
from ._fetch import Fetcher
from ._types import ProbeSpec

__all__ = ["CountSink", "Log2Sink"]


class CountSink:
    """Counts the events of the lines attached with it (``value``).

    On an entry line (``p:``) :func:`attach` counts in C: no event is made.
    """

    def __init__(self) -> None:
        self.actions: list[Any] = []         # the native Count of each line, if any
        self._events = 0

    def __call__(self, ev: Event) -> None:
        self._events += 1

    def count(self) -> Any:
        """A native action for one more line."""
        action = Count()
        self.actions.append(action)
        return action

    @property
    def value(self) -> int:
        return self._events + sum(int(a.value) for a in self.actions)

    def native_for(self, spec: ProbeSpec, fetchers: list[Fetcher]) -> bool:
        return not spec.is_return


class Log2Sink:
    """A log2 histogram of the argument ``arg`` of the events (bcc's ``bpf_log2l``
    of ``value // div``: slot ``bit_length``, 1 for 0), with their ``count`` and
    ``total`` (of the values before ``div``).

    On a return line whose only argument is ``arg=$duration`` (``u64``/``s64``)
    :func:`attach` times the calls in C (:class:`probes.actions.Latency`).
    """

    def __init__(self, arg: str, div: int = 1) -> None:
        if div < 1:
            raise ValueError(f"div must be >= 1, got {div}")
        self.arg = arg
        self.div = div
        self.actions: list[Any] = []         # the native Latency of each line, if any
        self._slots: Counter[int] = Counter()
        self._count = 0
        self._total = 0

    def __call__(self, ev: Event) -> None:
        value = ev.args.get(self.arg)
        if not isinstance(value, int):
            return                          # a fault fetching it: nothing to add
        self._slots[(max(0, value) // self.div).bit_length() or 1] += 1
        self._count += 1
        self._total += max(0, value)

    def native_for(self, spec: ProbeSpec, fetchers: list[Fetcher]) -> bool:
        if not spec.is_return or len(fetchers) != 1:
            return False
        f = fetchers[0]
        prog = f._prog
        return (f.name == self.arg and prog.load.op == "DURATION" and not prog.derefs
                and prog.store == "RAW" and not prog.count and prog.bitfield is None
                and f.type in ("u64", "s64"))

    def latency(self, now: Any) -> Any:
        """A native action for one more line (``now``: its clock, None for the host's)."""
        lat = Latency(now, self.div)
        self.actions.append(lat)
        return lat

    @property
    def hist(self) -> dict[int, int]:
        out = Counter(self._slots)
        for lat in self.actions:
            out.update(lat.hist)
        return dict(out)

    @property
    def count(self) -> int:
        return self._count + sum(int(lat.count) for lat in self.actions)

    @property
    def total(self) -> int:
        return self._total + sum(int(lat.total) for lat in self.actions)
