"""The ``kprobe-emu`` command: a registry of subcommands.

Each subcommand module calls :func:`command` at import time with a function
that adds its arguments and a function that runs it. New tools register
themselves the same way; this module holds no tool logic. Ctrl-C ends any
command with status 130 (128 + SIGINT, as a shell shows it) and one line.
``kprobe-emu --version`` prints the installed distribution's version.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

__all__ = ["main", "command", "CliError", "positive_int", "positive_float", "version"]

INTERRUPTED = 128 + 2      # SIGINT

# Modules that register subcommands; imported lazily by main().
_COMMAND_MODULES = ("kprobe_emu._cmd_demo", "kprobe_emu._cmd_run", "kprobe_emu._cmd_sweep",
                    "kprobe_emu._cmd_trace", "kprobe_emu._cmd_funclatency",
                    "kprobe_emu._cmd_funccount", "kprobe_emu._cmd_stackcount",
                    "kprobe_emu._cmd_argdist", "kprobe_emu._cmd_overhead")


class CliError(Exception):
    """A user error: printed as one line, exit status ``status`` (default 2)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_registry: dict[str, _Command] = {}


def positive_int(text: str) -> int:
    """argparse ``type`` of a count that must be at least 1 (a budget, a slice)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: give a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not positive: give an integer of at least 1")
    return value


def positive_float(text: str) -> float:
    """argparse ``type`` of a duration in seconds: positive and finite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: give a positive number of seconds") \
            from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive, finite number of seconds")
    return value


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None],
            run: Callable[[argparse.Namespace], int]) -> None:
    _registry[name] = _Command(name, help, configure, run)


class _Parser(argparse.ArgumentParser):
    """argparse, saying "a program to run is required" rather than naming the
    program's positional arguments."""

    def error(self, message: str) -> NoReturn:
        head = "the following arguments are required: "
        if message.startswith(head):
            missing = [a for a in message[len(head):].split(", ") if a != "args"]
            message = "a program to run is required" if missing == ["PROGRAM"] else head + ", ".join(missing)
        super().error(message)


def _parser() -> argparse.ArgumentParser:
    for module in _COMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    parser = _Parser(prog="kprobe-emu", description=(
        "Linux kprobes and kretprobes on an x86-64 emulator."))
    parser.add_argument("--version", action="version", version=f"kprobe-emu {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in _registry.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def version() -> str:
    """The installed version of the ``kprobe-emu`` distribution (``unknown`` when it
    runs from a source tree that was never installed)."""
    try:
        return importlib.metadata.version("kprobe-emu")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args._run(args))
    except CliError as exc:
        print(f"kprobe-emu {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        _say(f"kprobe-emu {args.command}: interrupted")
        return INTERRUPTED


def _say(line: str) -> None:
    """One line on stderr after the guest's output, whatever state the streams are in."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    try:
        if sys.stderr is not None:
            print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
