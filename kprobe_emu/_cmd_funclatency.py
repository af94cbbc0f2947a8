"""``kprobe-emu funclatency [-u|-m] [-F] [-r] PATTERN PROGRAM``: a log2 histogram of
each call's duration (bcc's funclatency).

bcc keys the entry time by thread, so a recursive function's inner calls
overwrite the outer ones' start and its histogram is wrong; here every return
is paired with its own entry (the kretprobe instance: ``$duration``), right
under recursion and threads.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from typing import IO

from emu import Machine
from emu._symbols import demangle
from probes import set_optimization
from probes.events import Log2Sink

from ._hist import format_log2_hist
from ._tools import add_tool_options, attach_line, event_name, for_each_function, run_tool
from .cli import command

_UNITS = {None: ("nsecs", 1), "u": ("usecs", 1000), "m": ("msecs", 1_000_000)}


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", help="functions to time: a glob or, with -r, a regex")
    unit = p.add_mutually_exclusive_group()
    unit.add_argument("-u", "--microseconds", dest="unit", action="store_const", const="u",
                      help="microsecond histogram")
    unit.add_argument("-m", "--milliseconds", dest="unit", action="store_const", const="m",
                      help="millisecond histogram")
    p.add_argument("-F", "--function", action="store_true", help="one histogram per function")
    p.add_argument("-r", "--regexp", action="store_true", help="PATTERN is a regular expression")
    add_tool_options(p)


def _run(args: argparse.Namespace) -> int:
    label, div = _UNITS[args.unit]

    def attach_all(m: Machine, out: IO[str]) -> Callable[[], None]:
        # On the host clock the probes are optimized where they can be, as the
        # kernel's default (debug.kprobes-optimization = 1): a code hook, not an
        # int3. On the virtual clock they stay int3, as trace's and attach()'s:
        # it counts the instructions an out-of-line step retires, so durations
        # are trace's $duration exactly.
        if args.clock == "host":
            set_optimization(m, True)
        sinks: dict[str, Log2Sink] = {}
        handles = []

        def attach_one(name: str) -> None:
            # Timed and histogrammed in C: no event is made (probes.events.Log2Sink).
            sink = sinks.setdefault(name, Log2Sink("d", div))
            handles.append(attach_line(m, f"r:funclatency/{event_name(name)} {name} d=$duration:u64",
                                       sink, args))
        for_each_function(m, args.pattern, args.regexp, attach_one)

        def report() -> None:
            hists: dict[str, Counter[int]] = {}
            for name, sink in sinks.items():
                hists.setdefault(name if args.function else "", Counter()).update(sink.hist)
            for key, hist in hists.items():
                if not +hist:
                    continue
                if key:
                    out.write(f"\nFunction = {demangle(key)}\n")
                out.write(format_log2_hist(hist, label))
            count = sum(s.count for s in sinks.values())
            total = sum(s.total for s in sinks.values())
            avg = total // div // count if count else 0
            out.write(f"\navg = {avg} {label}, total: {total // div} {label}, count: {count}\n")
            out.write(f"missed: {sum(h.missed for h in handles)}\n")
        return report
    return run_tool(args, "funclatency", attach_all)


command("funclatency", "a histogram of the functions' call durations (bcc's funclatency)",
        _configure, _run)
