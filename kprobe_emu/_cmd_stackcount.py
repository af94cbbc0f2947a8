"""``kprobe-emu stackcount [-f] FUNC PROGRAM``: how often each distinct stack reaches
FUNC's entry (bcc's stackcount), unwound by ``.eh_frame`` CFI; ``-f`` prints folded
stacks (``outer;mid;inner COUNT``) for flamegraph.pl and speedscope."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from typing import IO

from emu import Machine
from probes.events import Event

from ._hist import format_folded, format_stacks
from ._tools import add_tool_options, attach_line, event_name, for_each_function, run_tool
from .cli import command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("func", help="the function (a glob matching one or more)")
    p.add_argument("-f", "--folded", action="store_true", help="folded output, outermost first")
    p.add_argument("-r", "--regexp", action="store_true", help="FUNC is a regular expression")
    add_tool_options(p, maxactive=False)


def _run(args: argparse.Namespace) -> int:
    def attach_all(m: Machine, out: IO[str]) -> Callable[[], None]:
        stacks: Counter[tuple[str, ...]] = Counter()

        def sink(ev: Event) -> None:
            frames = [m.symbolize(a) for a in ev.stack or ()]
            # bcc shows function names, not offsets: one line per frame's function.
            stacks[tuple(f.rsplit("+", 1)[0] for f in frames)] += 1
        def attach_one(name: str) -> None:
            attach_line(m, f"p:stackcount/{event_name(name)} {name}", sink, args, stack=True)
        for_each_function(m, args.func, args.regexp, attach_one)

        def report() -> None:
            out.write(format_folded(stacks.items()) if args.folded else format_stacks(stacks))
        return report
    return run_tool(args, "stackcount", attach_all)


command("stackcount", "count the distinct stacks that call a function (bcc's stackcount)",
        _configure, _run)
