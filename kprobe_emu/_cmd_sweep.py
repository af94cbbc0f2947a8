"""``kprobe-emu sweep --seeds SPEC BINARY [ARGS...]``: one program under many seeds.

Every seed runs the program in a fresh machine (``kprobe-emu run --seed N`` replays
it); the seeds are grouped by outcome (stdout, exit status, fault) and the seeds whose
outcome differs from the majority's are reported with the command that replays them.
Exit status, as diff(1) has it: 0 when every seed agrees, 1 when some differ, 2 for
trouble (a usage error, a program that cannot be loaded, an unreachable cluster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from emu import EmuError, Machine, Outcome, SweepResult, sweep
from emu._memory import DEFAULT_MEM_LIMIT

from ._cmd_run import _stdin_bytes, add_program_options
from ._program import Program, program_from_args
from .cli import CliError, command

_SEED_PART = re.compile(r"(\d+)(?:-(\d+))?")
_STDOUT_LINES = 3           # of each outcome's stdout, in the human report
_LINE_WIDTH = 100
_SEED_RANGES = 20           # seed ranges listed per outcome; --json lists them all


def _configure(p: argparse.ArgumentParser) -> None:
    add_program_options(p)
    p.add_argument("--seeds", required=True, metavar="SPEC",
                   help="the seeds: ranges and lists such as 0-999 or 0-9,20,30-31")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="worker processes on this host (default: one per CPU)")
    p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run the seeds as tasks of a Ray cluster: HOST:PORT, ray://HOST:PORT, "
                        "auto (default: the cluster of this host) or local (a new one on this "
                        "host); needs kprobe-emu[ray]")
    p.add_argument("--json", action="store_true",
                   help='print {"runs": N, "outcomes": [{"exit", "stdout", "fault", "seeds"}]} '
                        "on one line")


@dataclass(frozen=True)
class _Program:
    """The program of a sweep and how each seed runs it; pickles to pool and Ray workers."""

    program: Program
    command: tuple[str, ...]        # the program and its arguments as given
    options: tuple[str, ...]        # run's options that shape the file view and environment
    stdin: bytes
    timeslice: int
    max_insns: int | None
    timeout: float | None
    mem_limit: int | None = None

    def machine(self, seed: int) -> Machine:
        return self.program.machine(seed=seed, timeslice=self.timeslice, stdin=self.stdin,
                                    mem_limit=self.mem_limit)

    def run(self, m: Machine) -> int:
        return m.run(max_insns=self.max_insns, timeout=self.timeout)

    def replay(self, seed: int) -> str:
        """The ``kprobe-emu run`` command line that replays ``seed``."""
        options = ["--seed", str(seed)]
        if self.max_insns is not None:
            options += ["--max-insns", str(self.max_insns)]
        if self.timeout is not None:
            options += ["--timeout", str(self.timeout)]
        if self.timeslice != 1000:
            options += ["--timeslice", str(self.timeslice)]
        options += self.options
        if self.mem_limit is not None and self.mem_limit != DEFAULT_MEM_LIMIT:
            options += ["--mem-limit", str(self.mem_limit)]
        return shlex.join(["kprobe-emu", "run", *options, *self.command])


def _view_options(args: argparse.Namespace) -> list[str]:
    """The options of ``args`` that shape what the program sees, to replay a seed."""
    options = [] if args.fs == "system" else ["--fs", args.fs]
    for flag, value in (("--cwd", args.cwd), ("--fs-root", args.fs_root)):
        if value is not None:
            options += [flag, value]
    for mount in args.mount:
        options += ["--mount", mount]
    if args.fs_writable:
        options.append("--fs-writable")
    if args.clear_env:
        options.append("--clear-env")
    for name, value in args.env:
        options += ["--env", f"{name}={value}"]
    return options


def _run(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    jobs = _jobs(args.jobs)
    address = _ray_address(args.ray)
    program = _Program(program_from_args(args), (args.binary, *args.args), tuple(_view_options(args)),
                       _stdin_bytes(), args.timeslice, args.max_insns, args.timeout, args.mem_limit)
    with _progress_bar() as progress:
        try:
            result = sweep(program.machine, seeds, run=program.run, jobs=jobs, ray=address,
                           progress=progress)
        except EmuError as exc:        # LoadError among them: the sweep ends on it
            raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print("\n".join(format_report(result, program.replay)))
    return 0 if len(result.outcomes) == 1 else 1


# --- arguments --------------------------------------------------------------------------
def parse_seeds(spec: str) -> Sequence[int]:
    """The seeds of ``--seeds``: ascending, each once (a ``range`` when contiguous).

    Raises:
        CliError: a part is not ``N`` or ``A-B`` with ``A <= B``, or no seed at all.
    """
    if not spec.strip(", "):
        raise CliError(f"--seeds {spec!r} names no seeds")
    ranges = []
    for part in spec.split(","):
        match = _SEED_PART.fullmatch(part.strip())
        if match is None:
            raise CliError(f"--seeds {spec!r}: {part!r} is neither a seed N nor a range A-B")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise CliError(f"--seeds {spec!r}: the range {part!r} ends before it starts")
        ranges.append(range(first, last + 1))
    merged = _merge(ranges)
    return merged[0] if len(merged) == 1 else [seed for r in merged for seed in r]


def _merge(ranges: list[range]) -> list[range]:
    merged: list[range] = []
    for r in sorted(ranges, key=lambda r: r.start):
        if merged and r.start <= merged[-1].stop:
            merged[-1] = range(merged[-1].start, max(merged[-1].stop, r.stop))
        else:
            merged.append(r)
    return merged


def _jobs(jobs: int | None) -> int:
    if jobs is None:
        return os.cpu_count() or 1
    if jobs < 1:
        raise CliError(f"--jobs {jobs}: needs at least one job")
    return jobs


def _ray_address(address: str | None) -> str | None:
    # --ray takes an optional value, so `--ray PROGRAM` would take the program for an
    # address: every Ray address but "auto" and "local" has a colon, a program path rarely.
    if address is not None and address not in ("auto", "local") and ":" not in address:
        raise CliError(f"--ray {address!r} is not a Ray address (auto, local, HOST:PORT or "
                       "ray://HOST:PORT); write --ray=ADDRESS, or --ray before another option")
    return address


# --- output -----------------------------------------------------------------------------
def format_report(result: SweepResult, replay: Callable[[int], str]) -> list[str]:
    """The human report: a summary line, then each outcome; deviants with a replay line."""
    count = len(result.outcomes)
    lines = [f"{_plural(result.runs, 'run')}, {_plural(count, 'outcome')}"
             + (": every seed agrees" if count == 1 else "")]
    for rank, (outcome, seeds) in enumerate(result.outcomes):
        label = "majority" if rank == 0 else "deviant"
        lines.append(f"{label}, {_plural(len(seeds), 'run')}: {_status(outcome)}")
        lines += _stdout_lines(outcome.stdout)
        lines.append(f"  seeds: {format_seeds(seeds)}")
        if rank:
            lines.append(f"  replay: {replay(seeds[0])}")
    return lines


def format_seeds(seeds: Sequence[int], limit: int = _SEED_RANGES) -> str:
    """Ascending seeds as ranges, ``0-2,5,7-8``; past ``limit`` ranges, how many more."""
    ranges: list[list[int]] = []
    for seed in seeds:
        if ranges and seed == ranges[-1][1] + 1:
            ranges[-1][1] = seed
        else:
            ranges.append([seed, seed])
    shown = ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges[:limit])
    rest = sum(b - a + 1 for a, b in ranges[limit:])
    return shown + (f" and {_plural(rest, 'more seed')}" if rest else "")


def _status(outcome: Outcome) -> str:
    return f"exit {outcome.exit}" + (f", {outcome.fault}" if outcome.fault else "")


def _stdout_lines(stdout: bytes) -> list[str]:
    text = stdout.decode("utf-8", "replace").splitlines()
    if not text:
        return ["  stdout: (empty)"]
    shown = [line if len(line) <= _LINE_WIDTH else line[:_LINE_WIDTH - 3] + "..."
             for line in text[:_STDOUT_LINES]]
    lines = ["  stdout: " + shown[0]] + ["          " + line for line in shown[1:]]
    if len(text) > _STDOUT_LINES:
        lines.append(f"          ... {_plural(len(text) - _STDOUT_LINES, 'more line')}")
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


@contextlib.contextmanager
def _progress_bar() -> Iterator[Callable[[int, int], None] | None]:
    """Progress on stderr when it is a terminal: rich's bar if installed, else a counter."""
    if not sys.stderr.isatty():
        yield None
        return
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    except ImportError:
        try:
            yield _counter
        finally:
            sys.stderr.write("\r\x1b[K")         # the counter's line goes away
        return
    columns = (TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("seeds"),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("sweep", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _counter(done: int, total: int) -> None:
    sys.stderr.write(f"\rkprobe-emu sweep: {done}/{total} seeds")
    sys.stderr.flush()


command("sweep", "run a program under many seeds and report the seeds whose outcome differs",
        _configure, _run)
