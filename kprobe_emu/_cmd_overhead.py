"""``kprobe-emu overhead (-e LINE | --handler MODULE:FUNC --symbol SYM) PROGRAM``: what a
probe costs on a program, per hit, split into the probe mechanism and the handler.

The measurement is :func:`probes.overhead.measure`: paired, interleaved samples of
the program unprobed and probed, each probe on its own against the same unprobed
runs, with a no-op probe of the same kind and the raw ctypes floor in the same
run. The program's output is captured, not printed. The result is a table
(``--json``: one JSON object, the last line of stdout; ``--chart FILE.png``: a
chart), the host's load, and ``warning:`` lines on stderr when the figures
cannot be trusted. The exit status is 0, or the tools' for an error.

A probe line is attached as ``trace`` attaches it, its events formatted as
``trace`` prints them and dropped, with the host clock: the virtual clock
counts every instruction of the run, a cost that is not per hit.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from emu import EmuError, GuestFault, Machine
from emu._sweep import fault_status
from emu.linux import Diagnostics
from probes import Kprobe, Kretprobe, ProbeError, register_kprobe, register_kretprobe
from probes.events import ParseError, TextSink, attach
from probes.overhead import OverheadReport, ProbeResult, Spread, draw_chart, measure

from ._cmd_run import LOAD_FAILED, _stdin_bytes, add_program_options, add_seed_option
from ._program import program_from_args
from ._tools import TOOL_MAXACTIVE, ToolError
from .cli import CliError, command, positive_int

USAGE = 2
_NAME = "overhead"


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--event", action="append", default=[], metavar="LINE",
                   help="a probe line to measure, e.g. 'p fib n=%%di' (repeatable: each is measured "
                        "on its own)")
    p.add_argument("--handler", default=None, metavar="MODULE:FUNC",
                   help="your handler: FUNC in MODULE (a module name or a .py file), a pre_handler "
                        "(kp, regs) for --kind p, a kretprobe handler (ri, regs) for --kind r")
    p.add_argument("--symbol", default=None, metavar="SYM", help="where --handler's probe goes")
    p.add_argument("--kind", choices=("p", "r"), default="p",
                   help="--handler's probe: p, a kprobe (default), or r, a kretprobe")
    p.add_argument("--repeats", type=positive_int, default=9, metavar="N",
                   help="paired samples (default 9), each the best of 3 runs")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on one line (the last line of stdout)")
    p.add_argument("--chart", default=None, metavar="FILE.png",
                   help="draw mechanism and handler per probe as stacked bars (matplotlib)")
    add_program_options(p)
    add_seed_option(p)


# --- what to measure ---------------------------------------------------------------------------
class _Discard(io.TextIOBase):
    """Where a probe line's formatted events go: the cost of formatting stays."""

    def write(self, text: str) -> int:
        return len(text)


def _line_attach(line: str) -> Callable[[Machine], object]:
    if line.strip().startswith("-:"):
        raise CliError(f"-e {line!r}: a delete line has nothing to measure")
    sink = TextSink(cast(IO[str], _Discard()))
    return lambda m: attach(m, line, sink, clock="host")


def load_handler(spec: str) -> Callable[..., Any]:
    """FUNC of ``MODULE:FUNC``: MODULE is a ``.py`` file or a module importable from
    the working directory. Raises CliError (one line)."""
    module, sep, func = spec.rpartition(":")
    if not sep or not module or not func:
        raise CliError(f"--handler {spec!r}: give MODULE:FUNC (a module or a .py file, and a function)")
    try:
        mod = _import(module)
    except CliError:
        raise
    except Exception as exc:        # the user's module: any error of its import
        raise CliError(f"--handler {spec!r}: cannot import {module}: {type(exc).__name__}: {exc}") \
            from None
    fn = getattr(mod, func, None)
    if fn is None or not callable(fn):
        raise CliError(f"--handler {spec!r}: {module} has no function {func!r}")
    return fn


def _import(module: str) -> Any:
    if module.endswith(".py") or os.sep in module:
        path = Path(module)
        if not path.is_file():
            raise CliError(f"--handler: {module}: no such file")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise CliError(f"--handler: {module}: not a Python module")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(module)


def _handler_attach(args: argparse.Namespace) -> Callable[[Machine], object]:
    fn = load_handler(args.handler)
    symbol, kind = args.symbol, args.kind

    def attach_handler(m: Machine) -> object:
        if kind == "r":
            rp = Kretprobe(symbol, handler=fn, maxactive=TOOL_MAXACTIVE)
            register_kretprobe(m, rp)
            return rp
        kp = Kprobe(symbol, pre_handler=fn)
        register_kprobe(m, kp)
        return kp
    return attach_handler


def _attaches(args: argparse.Namespace) -> dict[str, Callable[[Machine], object]]:
    if args.event and args.handler:
        raise CliError("give -e LINE or --handler MODULE:FUNC, not both")
    if args.handler is not None:
        if args.symbol is None:
            raise CliError("--handler needs --symbol SYM: where its probe goes")
        return {f"{args.kind} {args.symbol} ({args.handler})": _handler_attach(args)}
    if args.symbol is not None:
        raise CliError("--symbol goes with --handler MODULE:FUNC (a probe line names its own)")
    if not args.event:
        raise CliError("give what to measure: -e LINE or --handler MODULE:FUNC --symbol SYM")
    return {line: _line_attach(line) for line in args.event}


# --- the run -------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    attaches = _attaches(args)
    program = program_from_args(args)
    stdin = _stdin_bytes()

    def make() -> Machine:
        m = program.machine(seed=args.seed, timeslice=args.timeslice, stdin=stdin,
                            mem_limit=args.mem_limit, diagnostics=Diagnostics(verbose=args.verbose))
        m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
        return m

    def run(m: Machine) -> int:
        return m.run(max_insns=args.max_insns, timeout=args.timeout)

    try:
        report = measure(make, attaches, run, args.repeats, progress=_say)
    except ProbeError as exc:
        where = f"--symbol {args.symbol}: " if args.handler else ""
        print(f"kprobe-emu {_NAME}: {where}{exc.strerror}", file=sys.stderr)
        return USAGE
    except (ParseError, ToolError) as exc:
        print(f"kprobe-emu {_NAME}: {exc}", file=sys.stderr)
        return USAGE
    except GuestFault as exc:
        print(f"kprobe-emu {_NAME}: {args.binary}: {exc}", file=sys.stderr)
        return fault_status(exc)
    except EmuError as exc:         # LoadError
        print(f"kprobe-emu {_NAME}: {exc}", file=sys.stderr)
        return LOAD_FAILED
    except Exception as exc:
        if not any(n.startswith(_RAISED) for n in getattr(exc, "__notes__", ())):
            raise
        print(f"kprobe-emu {_NAME}: the handler raised {_where(exc)}{type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    _output(report, args)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


_RAISED = "raised by a probe handler"     # the note probes adds to a handler's exception


def _where(exc: BaseException) -> str:
    """``at FILE:LINE: `` of the innermost frame of ``exc``."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"at {frames[-1].filename}:{frames[-1].lineno}: " if frames else ""


def _say(line: str) -> None:
    print(f"kprobe-emu {_NAME}: {line}", file=sys.stderr, flush=True)


def _output(report: OverheadReport, args: argparse.Namespace) -> None:
    if args.chart is not None:
        try:
            draw_chart(report, args.chart)
        except ImportError:
            raise CliError("--chart needs matplotlib: pip install 'kprobe-emu[bench]'") from None
        except OSError as exc:
            raise CliError(f"cannot write {args.chart}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(report.to_json(), separators=(", ", ": ")), flush=True)
    elif sys.stdout.isatty() and _rich_table(report):
        return
    else:
        sys.stdout.write(format_report(report))


# --- the table -----------------------------------------------------------------------------------
_COLUMNS = ("probe", "hits", "missed", "per hit µs [95%]", "mechanism µs", "handler µs", "× floor",
            "slowdown")


def _cell(s: Spread) -> str:
    return f"{s.median:.3f} [{s.ci95[0]:.3f}, {s.ci95[1]:.3f}]"


def _row(p: ProbeResult) -> list[str]:
    ratio = "-" if p.floor_ratio is None else f"{p.floor_ratio:.1f}×"
    return [p.probe, f"{p.hits:,}", f"{p.missed:,}", _cell(p.per_hit_us), _cell(p.mechanism_us),
            _cell(p.handler_us), ratio, f"{p.slowdown:.2f}×"]


def _head(report: OverheadReport) -> str:
    return (f"unprobed run {report.unprobed_s * 1e3:.2f} ms (median of {report.runs} paired samples, "
            f"each the best of 3 runs)")


def _foot(report: OverheadReport) -> str:
    floors = ", ".join(f"{p.floor_us.median:.3f}" for p in report.probes)
    load = report.host.get("loadavg") or []
    loadtext = " ".join(f"{x:.2f}" for x in load) if load else "unknown"
    return (f"raw ctypes floor: {floors} µs per hit\n"
            f"load average: {loadtext} ({report.host.get('cpus')} CPUs)\n")


def format_report(report: OverheadReport) -> str:
    """The plain-text table: a header line, one row per probe, the floor and the load."""
    rows = [list(_COLUMNS)] + [_row(p) for p in report.probes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                           strict=True)))
             for r in rows]
    return _head(report) + "\n" + "\n".join(line.rstrip() for line in lines) + "\n" + _foot(report)


def _rich_table(report: OverheadReport) -> bool:
    """On a terminal: one rich table per probe (its figures as rows, so it fits in 80
    columns); False when rich is not installed."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    console = Console(highlight=False)
    console.print(_head(report))
    for p in report.probes:
        ratio = "no ratio to the floor" if p.floor_ratio is None else f"{p.floor_ratio:.1f}× the floor"
        table = Table(title=f"{p.probe}\n{p.hits:,} hits, {p.missed:,} missed, {ratio}, "
                            f"run {p.slowdown:.2f}× slower", title_justify="left")
        for i, name in enumerate(("µs per hit", "median", "95% interval", "min", "max")):
            table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
        for name, s in (("probe", p.per_hit_us), ("mechanism", p.mechanism_us),
                        ("handler", p.handler_us), ("raw floor", p.floor_us)):
            table.add_row(name, f"{s.median:.3f}", f"{s.ci95[0]:.3f} .. {s.ci95[1]:.3f}",
                          f"{s.min:.3f}", f"{s.max:.3f}")
        console.print(table)
    load = report.host.get("loadavg") or []
    console.print(f"load average: {' '.join(f'{x:.2f}' for x in load) or 'unknown'} "
                  f"({report.host.get('cpus')} CPUs)")
    return True


command(_NAME, "measure what a probe line or your handler costs per hit on a program",
        _configure, _run)
