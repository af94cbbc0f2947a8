"""``kprobe-emu run BINARY [ARGS...]``: run an x86-64 Linux program in the emulator.

The guest's standard output and error pass through; the command exits with the
program's status. A program that cannot be loaded, faults or runs away ends the
command with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from emu import GuestFault, LoadError, Machine
from emu._sweep import fault_status

from .cli import command

LOAD_FAILED = 127          # what a shell returns when it cannot execute a program


def _configure(p: argparse.ArgumentParser) -> None:
    add_program_options(p)
    add_seed_option(p)


def add_seed_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the thread scheduler, AT_RANDOM and getrandom (default 0): "
                        "the same seed replays the same run")


def add_program_options(p: argparse.ArgumentParser) -> None:
    """The program and how it runs: the options ``run`` shares with ``sweep`` and the tools."""
    p.add_argument("binary", help="the x86-64 ELF executable (static, static-pie or dynamic)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the program")
    p.add_argument("--max-insns", type=int, default=None, metavar="N",
                   help="stop the program after N instructions (default: no limit)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="stop the program after S seconds (default: no limit)")
    p.add_argument("--timeslice", type=int, default=1000, metavar="N",
                   help="longest scheduler slice in instructions when several threads can run "
                        "(default 1000)")
    p.add_argument("--fs-root", default=None, metavar="DIR",
                   help="let the program read files under DIR (its working directory)")
    p.add_argument("--fs-writable", action="store_true",
                   help="also let it create and write files under --fs-root")


def load_program(args: argparse.Namespace, command: str) -> Machine | int:
    """The machine ``args`` describe, or the exit status of a failure (reported)."""
    if args.fs_writable and args.fs_root is None:
        print(f"kprobe-emu {command}: --fs-writable needs --fs-root DIR", file=sys.stderr)
        return 2
    try:
        return Machine.from_elf(args.binary, [args.binary, *args.args], env=dict(os.environ),
                                stdin=_stdin_bytes(), fs_root=args.fs_root,
                                fs_writable=args.fs_writable, seed=args.seed,
                                timeslice=args.timeslice)
    except LoadError as exc:
        print(f"kprobe-emu {command}: {exc}", file=sys.stderr)
        return LOAD_FAILED


def run_program(m: Machine, args: argparse.Namespace, command: str) -> int:
    """Run to the end; the program's status, or a fault's as a shell shows it (reported)."""
    try:
        return m.run(max_insns=args.max_insns, timeout=args.timeout)
    except GuestFault as exc:
        sys.stdout.flush()
        print(f"kprobe-emu {command}: {args.binary}: {exc}", file=sys.stderr)
        return fault_status(exc)


def _run(args: argparse.Namespace) -> int:
    m = load_program(args, "run")
    if isinstance(m, int):
        return m
    return run_program(m, args, "run")


def _stdin_bytes() -> bytes:
    """The host's standard input when it is a file or a pipe; nothing from a terminal."""
    try:
        if sys.stdin is None or sys.stdin.isatty():
            return b""
        return sys.stdin.buffer.read()
    except (OSError, ValueError, AttributeError):    # closed, or replaced (pytest)
        return b""


command("run", "run an x86-64 Linux program in the emulator", _configure, _run)
