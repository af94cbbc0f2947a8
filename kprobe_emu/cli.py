"""The ``kprobe-emu`` command: a registry of subcommands.

Each subcommand module calls :func:`command` at import time with a function
that adds its arguments and a function that runs it. New tools register
themselves the same way; this module holds no tool logic.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["main", "command", "CliError"]

# Modules that register subcommands; imported lazily by main().
_COMMAND_MODULES = ("kprobe_emu._cmd_demo", "kprobe_emu._cmd_run", "kprobe_emu._cmd_sweep",
                    "kprobe_emu._cmd_trace", "kprobe_emu._cmd_funclatency",
                    "kprobe_emu._cmd_funccount", "kprobe_emu._cmd_stackcount",
                    "kprobe_emu._cmd_argdist")


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


@dataclass
class _Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_registry: dict[str, _Command] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None],
            run: Callable[[argparse.Namespace], int]) -> None:
    _registry[name] = _Command(name, help, configure, run)


def _parser() -> argparse.ArgumentParser:
    for module in _COMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    parser = argparse.ArgumentParser(prog="kprobe-emu", description=(
        "Linux kprobes and kretprobes on an x86-64 emulator."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in _registry.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args._run(args))
    except CliError as exc:
        print(f"kprobe-emu {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1
