"""``kprobe-emu funccount [-r] PATTERN PROGRAM``: calls of each matching function
(bcc's funccount), exact: a kprobe at each entry counts every call."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from typing import IO

from emu import Machine
from probes.events import Event

from ._hist import format_funccount
from ._tools import add_tool_options, attach_line, match_functions, run_tool
from .cli import command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", help="functions to count: a glob (fib*, libc.so.6:malloc) or, with -r, a regex")
    p.add_argument("-r", "--regexp", action="store_true", help="PATTERN is a regular expression")
    add_tool_options(p, maxactive=False)


def _run(args: argparse.Namespace) -> int:
    def attach_all(m: Machine, out: IO[str]) -> Callable[[], None]:
        counts: Counter[str] = Counter()
        names = match_functions(m, args.pattern, args.regexp)
        for i, name in enumerate(names):
            def sink(ev: Event, name: str = name) -> None:
                counts[name] += 1
            attach_line(m, f"p:funccount/f{i} {name}", sink, args)

        def report() -> None:
            out.write(format_funccount({n: counts[n] for n in names if counts[n]}))
        return report
    return run_tool(args, "funccount", attach_all)


command("funccount", "count calls of the functions a pattern matches (bcc's funccount)",
        _configure, _run)
