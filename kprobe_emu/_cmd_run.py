"""``kprobe-emu run PROGRAM [ARGS...]``: run an x86-64 Linux program in the emulator.

The guest's standard output and error pass through; the command exits with the
program's status. A program that cannot be found, loaded, faults or runs away
ends the command with one line on stderr, never a traceback. The guest's
standard input is the host's, read when (and as much as) the guest reads; its
host files are closed when the program ends, however it ends. What the program
is and sees (PATH lookup, ``#!``, environment, file view) is
:mod:`kprobe_emu._program`.

Diagnostics (denied file accesses, unknown system calls) are printed as they
happen with ``-v``; without it they are silent, and one summary line ends the
run when there were any. Probes that never armed (no object of theirs was
mapped) are reported at the end too, one line each.
"""

from __future__ import annotations

import argparse
import os
import sys

from emu import EmuError, GuestFault, Machine
from emu._sweep import fault_status
from emu.linux import Diagnostics
from emu.linux._diag import print_line
from emu.linux._files import Stdin
from probes import ProbeError
from probes._pending import pending_probes, probe_target

from ._program import NOT_FOUND, ProgramError, add_program_options, parse_size, program_from_args
from .cli import command

__all__ = ["add_program_options", "add_seed_option", "load_program", "run_program", "parse_size",
           "flush_stdout", "LOAD_FAILED"]

LOAD_FAILED = NOT_FOUND      # what a shell returns when it cannot execute a program
USAGE = 2
_DIAG_KEY = "kprobe_emu.diagnostics"


def _configure(p: argparse.ArgumentParser) -> None:
    add_program_options(p)
    add_seed_option(p)


def add_seed_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the thread scheduler, AT_RANDOM and getrandom (default 0): "
                        "the same seed replays the same run")


def load_program(args: argparse.Namespace, command: str) -> Machine | int:
    """The machine ``args`` describe, or the exit status of a failure (reported)."""
    try:
        program = program_from_args(args)
        diagnostics = Diagnostics(verbose=args.verbose)
        m = program.machine(seed=args.seed, timeslice=args.timeslice, stdin=_stdin_stream(),
                            mem_limit=args.mem_limit, diagnostics=diagnostics)
    except ProgramError as exc:
        print(f"kprobe-emu {command}: {exc}", file=sys.stderr)
        return exc.status
    except EmuError as exc:         # LoadError; or a --mem-limit too small for the machine itself
        print(f"kprobe-emu {command}: {exc}", file=sys.stderr)
        return LOAD_FAILED
    m.extensions[_DIAG_KEY] = diagnostics
    return m


def run_program(m: Machine, args: argparse.Namespace, command: str) -> int:
    """Run to the end; the program's status, or a fault's as a shell shows it (reported).
    The program's host files are closed however it ended, and stdout is left flushed
    (or, closed or full, pointed at /dev/null: see :func:`flush_stdout`); then the
    probes that never armed and the diagnostics' summary are reported."""
    try:
        return m.run(max_insns=args.max_insns, timeout=args.timeout)
    except GuestFault as exc:
        flush_stdout()
        print(f"kprobe-emu {command}: {args.binary}: {exc}", file=sys.stderr)
        return fault_status(exc)
    except ProbeError as exc:       # a pending probe's object came without its symbol
        flush_stdout()
        print(f"kprobe-emu {command}: {exc.strerror}", file=sys.stderr)
        return USAGE
    finally:
        m.close()
        flush_stdout()
        report_end(m)


def report_end(m: Machine) -> None:
    """The lines that end a run: each probe that never armed, the diagnostics' summary."""
    for probe, reason in pending_probes(m):
        print_line(f"probe on {probe_target(probe)} never armed: {reason}")
    diagnostics = m.extensions.get(_DIAG_KEY)
    summary = diagnostics.summary() if diagnostics is not None else None
    if summary is not None:
        print_line(summary)


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
