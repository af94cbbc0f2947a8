"""``kprobe-emu argdist -C|-H 'p|r:FUNC:EXPR[:TYPE]' PROGRAM``: the distribution of one
fetch expression (bcc's argdist, with the kprobe_events fetch language for EXPR):
``-C`` counts each distinct value, ``-H`` prints a log2 histogram.

    kprobe-emu argdist -C 'p:fib:$arg1' prog          # how often fib is called with each n
    kprobe-emu argdist -H 'r:parse_port:$retval:s64' prog
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from typing import IO

from emu import Machine
from probes.events import Event, Fetcher, compile_arg, format_value

from ._hist import format_counts, format_log2_hist, log2_slot
from ._tools import ToolError, add_tool_options, attach_line, run_tool
from .cli import command


def _configure(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("-C", "--count", dest="spec_count", metavar="SPEC",
                      help="count each value: 'p|r:FUNC:EXPR[:TYPE]'")
    mode.add_argument("-H", "--histogram", dest="spec_hist", metavar="SPEC",
                      help="log2 histogram of the values: 'p|r:FUNC:EXPR[:TYPE]'")
    add_tool_options(p)


def _line(spec: str) -> tuple[str, str]:
    """``p:FUNC:EXPR[:TYPE]`` -> (probe line, expression text)."""
    kind, _, rest = spec.partition(":")
    func, _, expr = rest.partition(":")
    if kind not in ("p", "r") or not func or not expr:
        raise ToolError(f"bad specifier {spec!r}: expected 'p:FUNC:EXPR' or 'r:FUNC:EXPR' "
                        "(EXPR in the probe language: $arg1, $retval, +0(%di):string, ...)")
    if func.count(":") == 0 and expr.count(":") > 1:      # OBJECT:SYM written as FUNC
        obj, _, after = expr.partition(":")
        func, expr = f"{func}:{obj}", after
    return f"{kind}:argdist/value {func} value={expr}", expr


def _run(args: argparse.Namespace) -> int:
    spec = args.spec_count or args.spec_hist

    def attach_all(m: Machine, out: IO[str]) -> Callable[[], None]:
        line, expr = _line(spec)
        counts: Counter[str] = Counter()
        slots: Counter[int] = Counter()
        fetchers: list[Fetcher] = []

        def sink(ev: Event) -> None:
            value = ev.args["value"]
            if args.spec_hist:
                if not isinstance(value, int):
                    raise ToolError(f"-H needs a number, {expr!r} gave {value!r}")
                slots[log2_slot(value)] += 1
            else:
                counts[format_value(fetchers[0], value)] += 1
        handle = attach_line(m, line, sink, args)
        fetchers.append(compile_arg(handle.spec.args[0], handle.spec.kind))

        def report() -> None:
            out.write(f"[{spec}]\n")
            out.write(format_log2_hist(slots, expr) if args.spec_hist else format_counts(counts, expr))
            out.write(f"missed: {handle.missed}\n")
        return report
    return run_tool(args, "argdist", attach_all)


command("argdist", "count or histogram one fetch expression at a probe (bcc's argdist)",
        _configure, _run)
