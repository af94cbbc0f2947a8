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
from probes.events import Event

from ._hist import format_log2_hist, log2_slot
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
        hists: dict[str, Counter[int]] = {}
        totals: Counter[str] = Counter()
        calls: Counter[str] = Counter()
        names: list[str] = []
        handles = []

        def attach_one(name: str) -> None:
            def sink(ev: Event) -> None:
                ns = ev.args["d"]
                key = name if args.function else ""
                hists.setdefault(key, Counter())[log2_slot(ns // div)] += 1
                totals[name] += ns
                calls[name] += 1
            handles.append(attach_line(m, f"r:funclatency/{event_name(name)} {name} d=$duration:u64",
                                       sink, args))
            names.append(name)
        for_each_function(m, args.pattern, args.regexp, attach_one)

        def report() -> None:
            for key in sorted(hists, key=lambda k: names.index(k) if k in names else -1):
                if key:
                    out.write(f"\nFunction = {demangle(key)}\n")
                out.write(format_log2_hist(hists[key], label))
            count, total = sum(calls.values()), sum(totals.values())
            avg = total // div // count if count else 0
            out.write(f"\navg = {avg} {label}, total: {total // div} {label}, count: {count}\n")
            out.write(f"missed: {sum(h.missed for h in handles)}\n")
        return report
    return run_tool(args, "funclatency", attach_all)


command("funclatency", "a histogram of the functions' call durations (bcc's funclatency)",
        _configure, _run)
