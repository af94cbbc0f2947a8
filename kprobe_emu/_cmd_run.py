"""``kprobe-emu run BINARY [ARGS...]``: run an x86-64 Linux program in the emulator.

The guest's standard output and error pass through; the command exits with the
program's status. A program that cannot be loaded, faults or runs away ends the
command with one line on stderr, never a traceback. The guest's standard input
is the host's, read when (and as much as) the guest reads; its host files are
closed when the program ends, however it ends.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from emu import EmuError, GuestFault, Machine
from emu._memory import DEFAULT_MEM_LIMIT
from emu._sweep import fault_status
from emu.linux._files import Stdin

from .cli import command, positive_float, positive_int

LOAD_FAILED = 127          # what a shell returns when it cannot execute a program
_SIZE = re.compile(r"(\d+)([KMGT]?)", re.IGNORECASE)


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
    p.add_argument("--max-insns", type=positive_int, default=None, metavar="N",
                   help="stop the program after N instructions (default: no limit)")
    p.add_argument("--timeout", type=positive_float, default=None, metavar="S",
                   help="stop the program after S seconds (default: no limit)")
    p.add_argument("--timeslice", type=positive_int, default=1000, metavar="N",
                   help="longest scheduler slice in instructions when several threads can run "
                        "(default 1000)")
    p.add_argument("--fs-root", default=None, metavar="DIR",
                   help="let the program read files under DIR (its working directory)")
    p.add_argument("--fs-writable", action="store_true",
                   help="also let it create and write files under --fs-root")
    p.add_argument("--mem-limit", type=parse_size, default=DEFAULT_MEM_LIMIT, metavar="SIZE",
                   help="the most memory the program may map, in bytes or with a K, M or G "
                        "suffix (default 4G); past it mmap and brk fail as out of memory")


def parse_size(text: str) -> int:
    """``512M`` -> 536870912: bytes, or K/M/G/T (powers of 1024); argparse's ``type``."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or not int(match[1]):
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: give a positive number of bytes, "
                                         f"or one with a K, M or G suffix (e.g. 512M)")
    unit = match[2].upper()
    return int(match[1]) << (10 * ("KMGT".index(unit) + 1) if unit else 0)


def load_program(args: argparse.Namespace, command: str) -> Machine | int:
    """The machine ``args`` describe, or the exit status of a failure (reported)."""
    if args.fs_writable and args.fs_root is None:
        print(f"kprobe-emu {command}: --fs-writable needs --fs-root DIR", file=sys.stderr)
        return 2
    try:
        return Machine.from_elf(args.binary, [args.binary, *args.args], env=dict(os.environ),
                                stdin=_stdin_stream(),  # type: ignore[arg-type]
                                fs_root=args.fs_root, fs_writable=args.fs_writable, seed=args.seed,
                                timeslice=args.timeslice, mem_limit=args.mem_limit)
    except EmuError as exc:         # LoadError; or a --mem-limit too small for the machine itself
        print(f"kprobe-emu {command}: {exc}", file=sys.stderr)
        return LOAD_FAILED


def run_program(m: Machine, args: argparse.Namespace, command: str) -> int:
    """Run to the end; the program's status, or a fault's as a shell shows it (reported).
    The program's host files are closed however it ended, and stdout is left flushed
    (or, closed or full, pointed at /dev/null: see :func:`flush_stdout`)."""
    try:
        return m.run(max_insns=args.max_insns, timeout=args.timeout)
    except GuestFault as exc:
        flush_stdout()
        print(f"kprobe-emu {command}: {args.binary}: {exc}", file=sys.stderr)
        return fault_status(exc)
    finally:
        m.close()
        flush_stdout()


def flush_stdout() -> None:
    """Flush the host's stdout. If it is closed or full (``>&-``, ``> /dev/full``) the
    guest has already had ``EBADF``/``ENOSPC``: point the descriptor at /dev/null,
    so Python's own flush at exit neither fails nor prints a traceback."""
    stream = sys.stdout
    if stream is None:
        return
    try:
        stream.flush()
    except (OSError, ValueError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass


def _run(args: argparse.Namespace) -> int:
    m = load_program(args, "run")
    if isinstance(m, int):
        return m
    return run_program(m, args, "run")


def _stdin_stream() -> Stdin:
    """The host's standard input as an unbuffered stream: each guest read is one
    host read of at most what the guest asked. Nothing when there is none."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):    # closed (<&-), or replaced (pytest)
        return b""
    return open(fd, "rb", buffering=0, closefd=False)


def _stdin_bytes() -> bytes:
    """The host's standard input when it is a file or a pipe; nothing from a terminal."""
    try:
        if sys.stdin is None or sys.stdin.isatty():
            return b""
        return sys.stdin.buffer.read()
    except (OSError, ValueError, AttributeError):    # closed, or replaced (pytest)
        return b""


command("run", "run an x86-64 Linux program in the emulator", _configure, _run)
