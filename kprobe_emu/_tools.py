"""What every tracing tool shares: ``run``'s options, ``-o``, ``--clock``, ``-M``,
attaching probe lines with one-line errors, the progress line, the misses.

A tool is a probe line (or a few) plus a sink and a report (DESIGN: front ends
hold no probe logic): :func:`run_tool` loads the program, lets the tool attach,
runs the program with its own output passing through, then has the tool write
its report to stdout or ``-o FILE`` and the ``kprobe_profile`` summary to stderr.
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import IO, Any

from emu import Machine, MappedObject
from emu._memory import PROT_X
from emu._objects import EXE
from emu._symbols import demangle, split_object, without_parameters
from probes import ProbeError
from probes.events import (
    CountSink,
    Event,
    EventHandle,
    Log2Sink,
    ParseError,
    attach,
    attached,
    format_profile,
)

from ._cmd_run import add_program_options, add_seed_option, load_program, run_program

__all__ = ["add_tool_options", "run_tool", "Attacher", "event_name", "for_each_function", "match_functions",
           "TOOL_MAXACTIVE"]

TOOL_MAXACTIVE = 4096          # deep recursion must not miss (-M N to change)
USAGE = 2

# attach_all(m, out) attaches the tool's probes (events may go to ``out`` as they
# happen) and returns report(), which writes what the tool sums up at the end.
Attacher = Callable[[Machine, IO[str]], Callable[[], None]]


class ToolError(Exception):
    """A user error found while attaching: one line (or the error_log entry), status 2."""


def add_tool_options(p: argparse.ArgumentParser, *, maxactive: bool = True) -> None:
    add_program_options(p)
    add_seed_option(p)
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="write the tool's output to FILE (the program's own output stays on stdout)")
    p.add_argument("--clock", choices=("virtual", "host"), default="virtual",
                   help="event time: guest instructions retired, 1 ns each (default: "
                        "deterministic), or the host's monotonic clock")
    if maxactive:
        p.add_argument("-M", "--maxactive", type=int, default=TOOL_MAXACTIVE, metavar="N",
                       help=f"instances of each return probe (default {TOOL_MAXACTIVE})")


def run_tool(args: argparse.Namespace, command: str, attach_all: Attacher) -> int:
    """Load, attach, run, report (see :data:`Attacher`). The program's status."""
    m = load_program(args, command)
    if isinstance(m, int):
        return m
    with m, ExitStack() as stack:       # the program's host files close however it ends
        try:
            out = stack.enter_context(_output(args.output))
        except OSError as exc:
            where = args.output or "standard output"
            print(f"kprobe-emu {command}: cannot write {where}: {exc.strerror}", file=sys.stderr)
            return USAGE
        try:
            report = attach_all(m, out)
        except (ParseError, ToolError, ProbeError) as exc:
            print(f"kprobe-emu {command}: {exc}", file=sys.stderr)
            return USAGE
        try:
            with _progress(m) as tick:
                m.extensions["kprobe_emu.tick"] = tick
                status = run_program(m, args, command)
            if sys.stdout is not None:
                sys.stdout.flush()
            report()
            out.flush()
        except OSError as exc:          # the tool's own output: full, closed, a broken pipe
            print(f"kprobe-emu {command}: cannot write {args.output or 'standard output'}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 1
    _profile(m)
    return status


def attach_line(m: Machine, line: str, sink: Callable[[Event], Any], args: argparse.Namespace, *,
                stack: bool = False) -> EventHandle:
    """Attach one line; every event also ticks the progress line."""
    tick = _ticker(m)
    maxactive = getattr(args, "maxactive", None)
    if maxactive is not None and maxactive < 1:
        raise ToolError(f"-M must be >= 1, got {maxactive}")

    def counted(ev: Event) -> None:
        tick()
        sink(ev)
    if isinstance(sink, CountSink | Log2Sink):
        # Aggregated in C when the line allows (no events to tick on: the
        # progress line reads the counts, see _progress).
        return attach(m, line, sink, clock=args.clock, maxactive=maxactive, stack=stack)
    return attach(m, line, counted, clock=args.clock, maxactive=maxactive, stack=stack)


def match_functions(m: Machine, pattern: str, regex: bool) -> list[str]:
    """The function symbols ``pattern`` names now (a glob, or a regex with ``regex``),
    in address order. ``OBJECT:SYM`` without wildcards is kept as is (it may be pending).

    A glob matches a name or its demangled form, with or without the parameters
    (``'ns::*'``, ``thrower``). In ``OBJECT:GLOB``
    ``OBJECT`` is any name of an object (``libc:*alloc``, see ``MappedObject.names``)
    unless it is a glob itself, which then matches the machine's names
    (``'libc*:malloc'`` matches ``libc.so.6:malloc``).

    Raises:
        ToolError: a bad pattern, or nothing matches (and nothing can match later).
    """
    found = _matching(m, pattern, regex)
    if not found and not _names_an_object(pattern, regex):
        raise ToolError(f"no function matches {pattern!r}")
    return found


def for_each_function(m: Machine, pattern: str, regex: bool, attach_one: Callable[[str], None]) -> None:
    """``attach_one(name)`` for each function ``pattern`` matches: now, and for an
    ``OBJECT:GLOB`` pattern also in objects the program maps later (a library)."""
    done: set[str] = set()

    def visit(names: list[str]) -> None:
        for name in names:
            if name not in done:
                done.add(name)
                attach_one(name)
    visit(match_functions(m, pattern, regex))
    if _names_an_object(pattern, regex):
        m.on_object_mapped.append(lambda obj: visit(_matching(m, pattern, regex, obj)))


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _names_an_object(pattern: str, regex: bool) -> bool:
    obj = split_object(pattern)[0]
    return obj is not None and (regex or _has_glob(pattern))


def _compile(pattern: str, regex: bool) -> re.Pattern[str]:
    try:
        return re.compile(pattern if regex else fnmatch.translate(pattern))
    except re.error as exc:
        raise ToolError(f"bad pattern {pattern!r}: {exc}") from None


def _matching(m: Machine, pattern: str, regex: bool, new: MappedObject | None = None) -> list[str]:
    """The executable functions ``pattern`` matches (only those of ``new`` if given)."""
    obj, rest = split_object(pattern)
    if not regex and obj is not None and not _has_glob(rest):
        return [pattern]
    by_alias = not regex and obj is not None and not _has_glob(obj)
    if by_alias:        # match GLOB in each object OBJECT names, by the object's prefix
        assert obj is not None
        objects = {None if o.kind == EXE else o.name for o in ([new] if new else m.objects) if o.matches(obj)}
        rx = _compile(rest, regex)
    else:
        rx = _compile(pattern, regex)
    found = []
    for name in m.symbols:
        if by_alias:
            owner, text = split_object(name)
            if owner not in objects:
                continue
        elif new is not None and not name.startswith(f"{new.name}:"):
            continue
        else:
            text = name
        sym = m.symbols.get_symbol(name)
        if sym is None or not sym.size or not _glob_matches(rx, text):
            continue
        region = m.mem.region_at(sym.addr)
        if region is not None and region.perms & PROT_X:
            found.append((sym.addr, name))
    return [name for _, name in sorted(found)]


def _glob_matches(rx: re.Pattern[str], name: str) -> bool:
    """``name`` matches, or its demangled form, with or without its parameters."""
    if rx.fullmatch(name):
        return True
    pretty = demangle(name)
    return pretty != name and bool(rx.fullmatch(pretty) or rx.fullmatch(without_parameters(pretty)))


def event_name(func: str) -> str:
    """A valid event name for a function (``libc.so.6:malloc`` -> ``libc_so_6_malloc``)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", func)
    return name if name[:1].isalpha() or name[:1] == "_" else f"_{name}"


def _ticker(m: Machine) -> Callable[[], None]:
    def tick() -> None:
        fn = m.extensions.get("kprobe_emu.tick")
        if fn is not None:
            fn()
    return tick


@contextmanager
def _progress(m: Machine) -> Iterator[Callable[[], None]]:
    """A progress line on a terminal's stderr: instructions, events, misses."""
    if not sys.stderr.isatty():
        yield lambda: None
        return
    state = {"events": 0, "last": 0.0}
    done = threading.Event()

    def show() -> None:
        state["last"] = time.monotonic()
        handles = attached(m)
        missed = sum(h.missed for h in handles)
        # Events aggregated in C (CountSink, Log2Sink) tick nothing: their hits count.
        events = int(state["events"]) + sum(h.hits for h in handles if type(h) is not EventHandle)
        sys.stderr.write(f"\r{m.now():,} instructions, {events:,} events, {missed:,} missed ")
        sys.stderr.flush()

    def tick() -> None:
        state["events"] += 1
        if time.monotonic() - state["last"] >= 0.5:
            show()

    def refresh() -> None:              # for runs whose events are all aggregated in C
        while not done.wait(0.5):
            if time.monotonic() - state["last"] >= 0.5 and any(
                    type(h) is not EventHandle for h in attached(m)):
                show()

    watcher = threading.Thread(target=refresh, name="kprobe-emu progress", daemon=True)
    watcher.start()
    try:
        yield tick
    finally:
        done.set()
        watcher.join()
        if state["last"]:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


@contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    if path is None:
        if sys.stdout is None:                   # started with stdout closed (>&-)
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        yield sys.stdout
        return
    with open(path, "w") as out:
        yield out


def _profile(m: Machine) -> None:
    """``kprobe_profile``: every event's hits and misses, on stderr."""
    rows = [(h.spec.event, h.hits, h.missed) for h in attached(m)]
    if rows:
        sys.stderr.write(format_profile(rows))
