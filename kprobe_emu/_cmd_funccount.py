"""``kprobe-emu funccount [-r] PATTERN PROGRAM``: calls of each matching function
(bcc's funccount), exact: a kprobe at each entry counts every call."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import IO

from emu import Machine
from emu._symbols import demangle
from probes import set_optimization
from probes.events import CountSink

from ._hist import format_funccount
from ._tools import add_tool_options, attach_line, event_name, for_each_function, run_tool
from .cli import command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", help="functions to count: a glob (fib*, libc.so.6:malloc) or, with -r, a regex")
    p.add_argument("-r", "--regexp", action="store_true", help="PATTERN is a regular expression")
    add_tool_options(p, maxactive=False)


def _run(args: argparse.Namespace) -> int:
    def attach_all(m: Machine, out: IO[str]) -> Callable[[], None]:
        # Optimized where they can be, as the kernel's default (debug.kprobes-
        # optimization = 1): a code hook, not an int3 (counts are the same).
        set_optimization(m, True)
        counts: dict[str, CountSink] = {}

        def attach_one(name: str) -> None:
            # Counted in C at each entry: no event is made (probes.events.CountSink).
            sink = counts.setdefault(name, CountSink())
            attach_line(m, f"p:funccount/{event_name(name)} {name}", sink, args)
        for_each_function(m, args.pattern, args.regexp, attach_one)

        def report() -> None:
            out.write(format_funccount({demangle(n): s.value for n, s in counts.items() if s.value}))
        return report
    return run_tool(args, "funccount", attach_all)


command("funccount", "count calls of the functions a pattern matches (bcc's funccount)",
        _configure, _run)
