"""``kprobe-emu demo``: the kernel's kretprobe example on the bundled guest."""

from __future__ import annotations

import argparse

from .cli import CliError, command
from .demo import run_demo


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calls", type=int, default=100, metavar="N",
                   help="how many times the driver calls open_file (default 100)")
    p.add_argument("--maxactive", type=int, default=20, metavar="N",
                   help="kretprobe instances to preallocate (default 20, as the kernel sample)")
    p.add_argument("--stacktrace", action="store_true",
                   help="print the symbolized stack trace of each failed call")


def _run(args: argparse.Namespace) -> int:
    if args.calls < 0:
        raise CliError(f"--calls must be >= 0, got {args.calls}")
    run_demo(calls=args.calls, maxactive=args.maxactive, stacktrace=args.stacktrace)
    return 0


command("demo", "run the kernel's kretprobe example (entry_handler + data_size) on a guest",
        _configure, _run)
