"""Where events go: ``trace_pipe`` text, JSON lines, a Perfetto (Chrome trace-event)
file, and the ``kprobe_profile`` summary.

A sink is any callable taking one :class:`Event`; these are the ones the CLI
offers. The Perfetto file follows the Trace Event Format (``{"traceEvents":
[...]}``, timestamps in microseconds): one track per task (``thread_name``
metadata), a complete ``"X"`` slice from each return probe's entry to its
return, an instant ``"i"`` per kprobe hit. It opens in ui.perfetto.dev and
chrome://tracing.
"""

from __future__ import annotations

import json
from typing import IO, Any

from ._event import Event, format_event

__all__ = ["TextSink", "JsonSink", "PerfettoSink", "format_profile"]


class TextSink:
    """``trace_pipe`` lines on ``stream``."""

    def __init__(self, stream: IO[str]) -> None:
        self._write = stream.write

    def __call__(self, ev: Event) -> None:
        self._write(format_event(ev))


class JsonSink:
    """One JSON object per event and line, exactly the :class:`Event` fields."""

    def __init__(self, stream: IO[str]) -> None:
        self._write = stream.write

    def __call__(self, ev: Event) -> None:
        self._write(json.dumps(ev.to_dict(), separators=(", ", ": ")) + "\n")


class PerfettoSink:
    """Collects events; :meth:`write` saves the trace-event JSON."""

    def __init__(self, pid: int = 1, process_name: str = "guest") -> None:
        self.pid = pid
        self.process_name = process_name
        self._events: list[dict[str, Any]] = []
        self._threads: dict[int, str] = {}

    def __call__(self, ev: Event) -> None:
        self._threads.setdefault(ev.tid, ev.comm)
        args = {k: v for k, v in ev.args.items()}
        if ev.kind == "r" and ev.entry_ts is not None:
            args["caller"] = ev.caller
            self._events.append({"name": ev.name, "cat": ev.group, "ph": "X", "pid": self.pid,
                                 "tid": ev.tid, "ts": ev.entry_ts / 1000,
                                 "dur": (ev.ts - ev.entry_ts) / 1000, "args": args})
        else:
            args["ip"] = ev.ip
            self._events.append({"name": ev.name, "cat": ev.group, "ph": "i", "s": "t",
                                 "pid": self.pid, "tid": ev.tid, "ts": ev.ts / 1000, "args": args})

    def trace(self) -> dict[str, Any]:
        """The whole trace as a JSON-ready object, slices sorted by start."""
        meta: list[dict[str, Any]] = [{"name": "process_name", "ph": "M", "pid": self.pid, "tid": 0,
                                       "args": {"name": self.process_name}}]
        meta += [{"name": "thread_name", "ph": "M", "pid": self.pid, "tid": tid,
                  "args": {"name": f"{comm}-{tid}"}} for tid, comm in sorted(self._threads.items())]
        # Ties by start: the longer (outer) slice first, so nesting reads right.
        body = sorted(self._events, key=lambda e: (e["ts"], -e.get("dur", 0)))
        return {"traceEvents": meta + body, "displayTimeUnit": "ns"}

    def write(self, path: str) -> None:
        with open(path, "w") as out:
            json.dump(self.trace(), out)


def format_profile(rows: list[tuple[str, int, int]]) -> str:
    """``kprobe_profile``: event name, hits, misses (trace_kprobe.c ``probes_profile_seq_show``)."""
    return "".join(f"  {name:<44} {hits:15} {misses:15}\n" for name, hits, misses in rows)
