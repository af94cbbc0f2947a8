"""Differential runs: each guest program natively and under the emulator.

Rule pinned (issue #4): for every build of every guest C program (glibc static,
static-pie, dynamic; musl static; -nostdlib) and for a few system programs, the
emulated run prints the same standard output and exits with the same status as
the native run, given the same argv, environment and standard input.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.guests import HAVE_MUSL, MUSL_NOTE, run_emulated, run_native

# program -> argument lists (argv[1:]) to run it with
PROGRAMS: dict[str, list[list[str]]] = {
    "fib": [[], ["10", "12"]],
    "ackermann": [["2", "4"]],
    "quicksort": [[], ["333"]],
    "strings": [[]],
    "parse": [[], ["22", "ssh", "", "99999", "1024"]],
}
FLAVOURS = ["static", "pie", "dyn", pytest.param("musl", marks=pytest.mark.skipif(
    not HAVE_MUSL, reason=MUSL_NOTE))]
CASES = [(prog, args) for prog, arglists in PROGRAMS.items() for args in arglists]


def _same(argv: list[str], **kwargs: object) -> None:
    native = run_native(argv, **kwargs)  # type: ignore[arg-type]
    emulated = run_emulated(argv, **kwargs)  # type: ignore[arg-type]
    assert emulated[1].decode(errors="replace") == native[1].decode(errors="replace")
    assert emulated[0] == native[0], f"exit status: emulated {emulated[0]}, native {native[0]}"


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(("prog", "args"), CASES, ids=[f"{p}-{'-'.join(a) or 'default'}" for p, a in CASES])
def test_guest_program_matches_native(guest_bin: Path, prog: str, args: list[str], flavour: str) -> None:
    """Same stdout and exit status as natively, for each build of each program."""
    _same([str(guest_bin / f"{prog}.{flavour}"), *args])


@pytest.mark.parametrize("args", [[], ["one"], ["a", "b", "c"]])
def test_nostdlib_program_matches_native(guest_bin: Path, args: list[str]) -> None:
    """A -nostdlib program: raw syscalls, argc from the stack, rcx after syscall."""
    _same([str(guest_bin / "nolibc"), *args])


SYSTEM_PROGRAMS = [
    ["/bin/true"],
    ["/bin/false"],
    ["/bin/echo", "hello", "from", "the", "emulator"],
    ["/usr/bin/basename", "/usr/lib/x86_64-linux-gnu/libc.so.6", ".so.6"],
    ["/usr/bin/basename"],          # a usage error: status 1
]


@pytest.mark.parametrize("argv", SYSTEM_PROGRAMS, ids=[" ".join(a) for a in SYSTEM_PROGRAMS])
def test_system_program_matches_native(argv: list[str]) -> None:
    """Dynamically linked distribution binaries run as they do natively."""
    if not os.path.exists(argv[0]):
        pytest.skip(f"{argv[0]} is not installed")
    _same(argv)


def test_environment_reaches_the_guest() -> None:
    """envp on the initial stack: /usr/bin/env prints exactly what it was given."""
    if not os.path.exists("/usr/bin/env"):
        pytest.skip("/usr/bin/env is not installed")
    _same(["/usr/bin/env"], env={"A": "1", "GREETING": "hello world", "EMPTY": ""})


def test_stdin_reaches_the_guest() -> None:
    """The bytes given as stdin are what read(0, ...) returns, then end of file."""
    if not os.path.exists("/bin/cat"):
        pytest.skip("/bin/cat is not installed")
    _same(["/bin/cat"], stdin=b"line one\nline two\n\x00binary\xff\n")
