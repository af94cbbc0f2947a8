"""Probe events: the kernel's ``kprobe_events`` language (Documentation/trace/kprobetrace.rst).

:func:`parse` turns one line (``p:grp/ev fib n=%di:s64``) into a
:class:`ProbeSpec` or raises :class:`ParseError` with the kernel's error name
and caret column; :func:`compile_arg` turns each :class:`FetchArg` into a
:class:`Fetcher` that reads its value at a hit from a :class:`FetchContext`,
and :func:`format_value` prints a value as the kernel's trace does.
:func:`attach` puts a line on a machine: each hit hands an :class:`Event` to a
sink (:class:`TextSink` for ``trace_pipe`` lines, :class:`JsonSink`,
:class:`PerfettoSink`); :class:`CountSink` and :class:`Log2Sink` aggregate in C
when the line needs no event. On the native core a line's fetches run in C
and its events are made in batches (:func:`flush` delivers them at once).
"""

from ._aggregate import CountSink, Log2Sink
from ._attach import CLOCKS, EventHandle, attach, attached
from ._errors import ERRORS, ParseError
from ._event import Event, format_event
from ._fetch import FetchContext, Fetcher, compile_arg, format_value
from ._native import flush
from ._parse import parse
from ._sinks import JsonSink, PerfettoSink, TextSink, format_profile
from ._types import FetchArg, ProbeSpec

__all__ = [
    "CLOCKS", "CountSink", "ERRORS", "Event", "EventHandle", "FetchArg", "FetchContext", "Fetcher",
    "JsonSink", "Log2Sink", "ParseError", "PerfettoSink", "ProbeSpec", "TextSink", "attach",
    "attached", "compile_arg", "flush", "format_event", "format_profile", "format_value", "parse",
]
