"""``kprobe-emu trace -e LINE [-e LINE ...] PROGRAM``: probe events, the kernel's language.

Each ``-e`` is a ``kprobe_events`` line (Documentation/trace/kprobetrace.rst);
every hit prints a ``trace_pipe`` line (``--json``: one JSON object a line),
``--perfetto FILE`` also writes a trace for ui.perfetto.dev, and the
``kprobe_profile`` summary goes to stderr at the end.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import IO

from emu import Machine
from probes.events import Event, JsonSink, PerfettoSink, TextSink

from ._tools import ToolError, add_tool_options, attach_line, run_tool
from .cli import command


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--event", action="append", required=True, metavar="LINE",
                   help="a probe line, e.g. 'p:fibs fib n=%%di' or 'r fib ret=$retval' (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object per event instead of text")
    p.add_argument("--perfetto", default=None, metavar="FILE",
                   help="also write a Chrome trace-event JSON file (ui.perfetto.dev)")
    add_tool_options(p, maxactive=False)


def _run(args: argparse.Namespace) -> int:
    def attach_all(m: Machine, out: IO[str]) -> Callable[[], None]:
        sink = JsonSink(out) if args.json else TextSink(out)
        perfetto = PerfettoSink(process_name=os.path.basename(args.binary)) if args.perfetto else None

        def both(ev: Event) -> None:
            sink(ev)
            if perfetto is not None:
                perfetto(ev)
        for line in args.event:
            if line.strip().startswith("-:"):
                raise ToolError(f"-e {line!r}: a delete line has nothing to trace")
            attach_line(m, line, both, args)

        def report() -> None:
            if perfetto is not None:
                perfetto.write(args.perfetto)
        return report
    return run_tool(args, "trace", attach_all)


command("trace", "trace probe events (kprobe_events lines) on a program", _configure, _run)
