"""Where events go: ``trace_pipe`` text, JSON lines, a Perfetto trace, the profile.

Rules pinned:
- ``format_event`` is trace_pipe's line (kernel/trace/trace_output.c
  ``trace_print_context``: ``%16s-%-7d``, ``[%03d]``, seconds and microseconds;
  trace_kprobe.c ``print_kprobe_event``: ``(%pS)``, ``print_kretprobe_event``:
  ``(%pS <- %ps)``; then `` name=value`` per argument);
- ``JsonSink`` writes one JSON object a line with exactly the Event fields;
- ``PerfettoSink`` writes the Trace Event Format: every event has name, ph, pid, tid;
  every non-metadata event a ts (us); one ``thread_name`` metadata event per task; a
  complete ``"X"`` slice per call of a return probe (from its own entry to its return,
  so the slices of one thread nest), an instant per kprobe hit;
- ``format_profile`` is kprobe_profile's ``"  %-44s %15lu %15lu\\n"``.
"""

from __future__ import annotations

import functools
import io
import json
from collections import Counter
from pathlib import Path

import pytest

import guest
from emu import Machine
from probes.events import (
    Event,
    JsonSink,
    PerfettoSink,
    TextSink,
    attach,
    format_event,
    format_profile,
)

FIELDS = ["ts", "tid", "pid", "comm", "cpu", "group", "name", "kind", "ip", "caller", "args"]


@functools.cache
def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def fib_calls(n: int) -> int:
    return 1 if n < 2 else 1 + fib_calls(n - 1) + fib_calls(n - 2)


def run_tasks(lines: list[str], ns: list[int], *, timeslice: int = 1000) -> tuple[Machine, list[Event]]:
    """The assembled fib, ``lines`` attached, one task ``w<i>`` per ``fib(ns[i])``."""
    m = guest.load("fib")
    events: list[Event] = []
    for line in lines:
        attach(m, line, events.append)
    tasks = [m.spawn("fib", n, name=f"w{i}") for i, n in enumerate(ns)]
    m.run_tasks(seed=7, timeslice=timeslice)
    assert [t.result for t in tasks] == [fib(n) for n in ns]
    return m, events


# --- trace_pipe text ----------------------------------------------------------------------------
def test_trace_pipe_lines_of_a_run() -> None:
    """Entry and return lines of fib(2), byte for byte: comm right-aligned in 16, tid
    left-aligned in 7, cpu in 3 digits, time as seconds.microseconds, ``(sym+off/size)``
    for a kprobe, ``(caller+off/size <- func)`` for a return, then the arguments as the
    kernel prints their types (s64 decimal, x32 hex, string quoted, a fault ``(fault)``)."""
    _, events = run_tasks(["p:fibs/enter fib n=%di:s64 c=$comm f=+0(\\0):u64",
                           "r:fibs/leave fib n=$arg1:s64 ret=$retval:x32"], [2])
    assert [format_event(ev) for ev in events] == [
        '              w0-2       [000]      0.000000: enter: (fib+0x0/0x38) n=2 c="w0" f=(fault)\n',
        '              w0-2       [000]      0.000000: enter: (fib+0x0/0x38) n=1 c="w0" f=(fault)\n',
        "              w0-2       [000]      0.000000: leave: (fib+0x1b/0x38 <- fib) n=1 ret=0x1\n",
        '              w0-2       [000]      0.000000: enter: (fib+0x0/0x38) n=0 c="w0" f=(fault)\n',
        "              w0-2       [000]      0.000000: leave: (fib+0x28/0x38 <- fib) n=0 ret=0x0\n",
        "              w0-2       [000]      0.000000: leave: (0x7fffffff0000 <- fib) n=2 ret=0x1\n",
    ]


def test_trace_pipe_line_fields_at_full_width() -> None:
    """A 15-character comm, a 7-digit tid and a time past one second fill their columns."""
    ev = Event(12_345_678_000, 1234567, "quicksort.stati", "kprobes", "p_main_0", "p", "main+0x0",
               None, {"argc": 3}, texts=lambda: ["argc=3"], ip_text="main+0x0/0x1cd", func="main")
    assert format_event(ev) == \
        " quicksort.stati-1234567 [000]     12.345678: p_main_0: (main+0x0/0x1cd) argc=3\n"
    ret = Event(7_000, 8, "t", "g", "leave", "r", "f+0x0", "main+0x10", {}, entry_ts=5_000,
                ip_text="f+0x0/0x20", caller_text="main+0x10/0x40", func="f")
    assert format_event(ret) == "               t-8       [000]      0.000007: leave: (main+0x10/0x40 <- f)\n"


def test_timestamp_column_is_the_kernels() -> None:
    """trace_print_time: ``" %5lu.%06lu"`` after ``"[%03d] "``, microseconds rounded."""
    ev = Event(1_999_999_500, 1, "fib.static", "kprobes", "p_fib_0", "p", "fib+0x0", None, {},
               ip_text="fib+0x0/0x31", func="fib")
    assert format_event(ev) == "      fib.static-1       [000]      2.000000: p_fib_0: (fib+0x0/0x31)\n"


def test_text_sink_writes_the_lines() -> None:
    """TextSink writes each event's format_event line, in order."""
    _, events = run_tasks(["p fib n=%di:u32", "r fib ret=$retval:s64"], [3])
    out = io.StringIO()
    sink = TextSink(out)
    for ev in events:
        sink(ev)
    assert out.getvalue() == "".join(format_event(ev) for ev in events)
    assert out.getvalue().count("\n") == 2 * fib_calls(3)


# --- JSON lines -----------------------------------------------------------------------------------
def test_json_lines_are_exactly_the_event_fields() -> None:
    """One JSON object a line, keys exactly the Event fields in order; ints stay ints,
    strings str, arrays lists, a fault null; caller null for a kprobe."""
    _, events = run_tasks(["p:fibs/enter fib n=%di:s64 c=$comm f=+0(\\0):u64 "
                           "b=+0(%sp):u8[2]",
                           "r:fibs/leave fib n=$arg1:s64 ret=$retval:x32"], [3])
    out = io.StringIO()
    sink = JsonSink(out)
    for ev in events:
        sink(ev)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(events) == 2 * fib_calls(3)
    for line, ev in zip(lines, events, strict=True):
        obj = json.loads(line)
        assert list(obj) == FIELDS
        assert obj == {"ts": ev.ts, "tid": ev.tid, "pid": ev.pid, "comm": "w0", "cpu": 0, "group": "fibs",
                       "name": ev.name, "kind": ev.kind, "ip": "fib+0x0", "caller": ev.caller,
                       "args": ev.args}
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    assert first["caller"] is None and first["name"] == "enter" and first["kind"] == "p"
    assert first["args"]["n"] == 3 and first["args"]["c"] == "w0" and first["args"]["f"] is None
    assert isinstance(first["args"]["b"], list) and len(first["args"]["b"]) == 2
    assert last["kind"] == "r" and last["args"] == {"n": 3, "ret": 2}
    assert isinstance(last["caller"], str)


# --- Perfetto (Trace Event Format) ----------------------------------------------------------------
def _ns(us: float) -> int:
    return round(us * 1000)


def check_trace_event_format(trace: dict) -> list[dict]:
    """The rules of the Trace Event Format a viewer relies on; the non-metadata events."""
    assert set(trace) >= {"traceEvents"}
    body = []
    for ev in trace["traceEvents"]:
        assert isinstance(ev["name"], str) and ev["ph"] in ("X", "i", "M", "B", "E")
        assert isinstance(ev["pid"], int) and isinstance(ev["tid"], int)
        if ev["ph"] == "M":
            assert ev["name"] in ("process_name", "thread_name") and "name" in ev["args"]
            continue
        assert isinstance(ev["ts"], (int, float)) and ev["ts"] >= 0
        if ev["ph"] == "X":
            assert ev["dur"] >= 0
        if ev["ph"] == "i":
            assert ev.get("s", "t") in ("g", "p", "t")
        body.append(ev)
    return body


def check_nesting(slices: list[dict]) -> int:
    """Per thread, complete slices nest: one that starts inside another ends inside it.
    The greatest depth."""
    deepest = 0
    by_tid: dict[int, list[tuple[int, int]]] = {}
    for s in slices:
        by_tid.setdefault(s["tid"], []).append((_ns(s["ts"]), _ns(s["ts"]) + _ns(s["dur"])))
    for spans in by_tid.values():
        stack: list[tuple[int, int]] = []
        for start, end in sorted(spans, key=lambda se: (se[0], -se[1])):
            while stack and stack[-1][1] <= start:
                stack.pop()
            if stack:
                assert stack[-1][0] <= start and end <= stack[-1][1], "overlapping slices"
            stack.append((start, end))
            deepest = max(deepest, len(stack))
    return deepest


def test_perfetto_trace_of_recursion_on_three_tasks(tmp_path: Path) -> None:
    """fib on three interleaved tasks: a thread_name per task, one X slice per call spanning
    exactly its own entry to its return (checked against the p events paired per thread),
    slices nest per thread as deep as the recursion, one instant per kprobe hit."""
    ns = [6, 5, 7]
    _, events = run_tasks(["p:fib/enter fib n=%di:s64", "r64:fib/call fib n=$arg1:s64"], ns,
                          timeslice=40)
    sink = PerfettoSink(process_name="fib")
    for ev in events:
        sink(ev)
    path = tmp_path / "trace.json"
    sink.write(str(path))
    trace = json.loads(path.read_text())
    assert trace == json.loads(json.dumps(sink.trace()))
    body = check_trace_event_format(trace)
    tids = {ev.tid for ev in events}
    assert len(tids) == 3
    meta = [e for e in trace["traceEvents"] if e["ph"] == "M"]
    assert [e["args"]["name"] for e in meta if e["name"] == "process_name"] == ["fib"]
    names = {e["tid"]: e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    assert set(names) == tids
    assert all(names[ev.tid].startswith(ev.comm) for ev in events)
    slices = [e for e in body if e["ph"] == "X"]
    instants = [e for e in body if e["ph"] == "i"]
    calls = sum(fib_calls(n) for n in ns)
    assert len(slices) == len(instants) == calls
    # Ground truth: each call's entry (its p event) and return (its r event), paired per thread.
    open_calls: dict[int, list[int]] = {}
    truth = Counter()
    for ev in events:
        if ev.kind == "p":
            open_calls.setdefault(ev.tid, []).append(ev.ts)
        else:
            truth[(ev.tid, open_calls[ev.tid].pop(), ev.ts)] += 1
    assert Counter((s["tid"], _ns(s["ts"]), _ns(s["ts"]) + _ns(s["dur"])) for s in slices) == truth
    assert Counter((i["tid"], _ns(i["ts"])) for i in instants) == \
        Counter((ev.tid, ev.ts) for ev in events if ev.kind == "p")
    assert check_nesting(slices) == max(ns)          # fib(n) nests n calls deep
    # The tasks interleave, so a thread-blind view would not nest: the check has teeth.
    with pytest.raises(AssertionError, match="overlapping"):
        check_nesting([{**s, "tid": 0} for s in slices])


# --- kprobe_profile ------------------------------------------------------------------------------
def test_profile_lines() -> None:
    """kprobe_profile's line per event (trace_kprobe.c probes_profile_seq_show)."""
    rows = [("p_fib_0", 177, 0), ("r_fib_0", 465, 22), ("a" * 50, 12345678901234567, 1)]
    assert format_profile(rows) == "".join("  %-44s %15lu %15lu\n".replace("lu", "d") % row
                                           for row in rows)
    assert format_profile(rows[:1]) == \
        "  p_fib_0                                                  177               0\n"
    assert format_profile([]) == ""
