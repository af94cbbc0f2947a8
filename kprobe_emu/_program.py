"""Which program a command runs and how: the options ``run`` shares with ``sweep``
and the tracing tools, turned into a picklable :class:`Program`.

- ``PROGRAM`` without a slash is looked up in ``PATH`` as a shell does
  (``shutil.which`` on the host's ``PATH``); not found: "command not found", 127.
- A file starting with ``#!`` runs its interpreter as the kernel's
  ``binfmt_script`` does (fs/binfmt_script.c, ``load_script``): the interpreter
  path, at most one argument (the rest of the line, inner blanks kept), the
  script's path, then the arguments after ``argv[0]``; nested up to
  :data:`MAX_INTERP_DEPTH` levels, as ``exec_binprm`` allows.
- The guest's environment is the host's (``--clear-env``: none), then each
  ``--env NAME=VALUE`` in order.
- The file view (``emu.linux.FsPolicy``): ``--fs system`` (the default) shows
  the system directories read-only and the working directory (``--cwd``,
  default the host's; ``--fs-root`` means the same there), ``--fs none`` only
  ``--fs-root`` (or ``--cwd``); ``--mount`` adds host directories;
  ``--fs-writable`` makes the working directory writable.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emu import Machine
from emu._memory import DEFAULT_MEM_LIMIT
from emu.linux import Diagnostics, FsPolicy

from .cli import CliError, positive_float, positive_int

__all__ = ["Program", "ProgramError", "add_program_options", "parse_env", "parse_shebang",
           "program_from_args", "resolve_program", "BINPRM_BUF_SIZE", "MAX_INTERP_DEPTH"]

NOT_FOUND = 127              # what a shell returns for a command it cannot find or load
BINPRM_BUF_SIZE = 256        # include/uapi/linux/binfmts.h: how much of a #! line is read
MAX_INTERP_DEPTH = 4         # script -> interpreter script -> ...; exec_binprm's limit is 5 in all
_SIZE = re.compile(r"(\d+)([KMGT]?)", re.IGNORECASE)
_BLANKS = b" \t"


class ProgramError(CliError):
    """A program that cannot be started: one line, and a shell's exit status."""


@dataclass(frozen=True)
class Program:
    """What to load and how; picklable (``sweep`` sends it to worker processes).

    Attributes:
        path: the ELF file to load (a script's interpreter).
        argv: the guest's arguments, ``argv[0]`` first.
        env: the guest's environment.
        scripts: the ``#!`` scripts read on the way (the guest reads them too).
        fs: ``"system"`` or ``"none"``.
        cwd: the working directory (``None``: the host's); with ``fs="none"``
            the only tree the guest sees.
        writable: the working directory is writable.
        mounts: the ``--mount`` texts (``HOST[:GUEST][:ro|rw]``).
    """

    path: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    scripts: tuple[str, ...] = ()
    fs: str = "system"
    cwd: str | None = None
    writable: bool = False
    mounts: tuple[str, ...] = ()

    def policy(self) -> FsPolicy:
        """The guest's file view. Raises ProgramError for a directory that is not one."""
        files = (self.path, *self.scripts)
        mounts = tuple(map(_mount, self.mounts))
        try:
            if self.fs == "none":
                return FsPolicy(self.cwd, self.writable, files=files, mounts=mounts)
            return FsPolicy.system(self.cwd, writable=self.writable, files=files, mounts=mounts)
        except (OSError, ValueError) as exc:
            raise ProgramError(str(exc)) from None

    def machine(self, *, seed: int = 0, timeslice: int = 1000, stdin: Any = b"",
                mem_limit: int | None = None, diagnostics: Diagnostics | None = None) -> Machine:
        """A machine ready to run the program. Raises ``emu.LoadError``, ProgramError."""
        extra: dict[str, Any] = {} if mem_limit is None else {"mem_limit": mem_limit}
        return Machine.from_elf(self.path, list(self.argv), env=dict(self.env), stdin=stdin,
                                seed=seed, timeslice=timeslice, fs=self.policy(),
                                diagnostics=diagnostics, **extra)


def add_program_options(p: argparse.ArgumentParser) -> None:
    """The program and how it runs: the options ``run`` shares with ``sweep`` and the tools."""
    p.add_argument("binary", metavar="PROGRAM",
                   help="the program: an x86-64 ELF executable or a #! script, looked up in PATH "
                        "when it has no slash")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the program")
    p.add_argument("--max-insns", type=positive_int, default=None, metavar="N",
                   help="stop the program after N instructions (default: no limit)")
    p.add_argument("--timeout", type=positive_float, default=None, metavar="S",
                   help="stop the program after S seconds (default: no limit)")
    p.add_argument("--timeslice", type=positive_int, default=1000, metavar="N",
                   help="longest scheduler slice in instructions when several threads can run "
                        "(default 1000)")
    p.add_argument("--env", action="append", type=parse_env, default=[], metavar="NAME=VALUE",
                   help="set a variable in the program's environment (repeatable)")
    p.add_argument("--clear-env", action="store_true",
                   help="start from an empty environment instead of the host's")
    p.add_argument("--fs", choices=("system", "none"), default="system",
                   help="system (default): the system directories and the working directory, "
                        "read-only, and a private /tmp; none: only --fs-root")
    p.add_argument("--mount", action="append", type=_parse_mount, default=[],
                   metavar="HOST[:GUEST][:ro|rw]",
                   help="show host directory HOST at GUEST (default: the same path), read-only "
                        "unless rw (repeatable)")
    p.add_argument("--cwd", default=None, metavar="DIR",
                   help="the program's working directory (default: the current one)")
    p.add_argument("--fs-root", default=None, metavar="DIR",
                   help="with --fs none: the only directory the program sees (its working "
                        "directory); with --fs system: the same as --cwd")
    p.add_argument("--fs-writable", action="store_true",
                   help="let the program create and write files in its working directory")
    p.add_argument("--mem-limit", type=parse_size, default=DEFAULT_MEM_LIMIT, metavar="SIZE",
                   help="the most memory the program may map, in bytes or with a K, M or G "
                        "suffix (default 4G); past it mmap and brk fail as out of memory")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print denied file accesses and unknown system calls as they happen")


def parse_size(text: str) -> int:
    """``512M`` -> 536870912: bytes, or K/M/G/T (powers of 1024); argparse's ``type``."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or not int(match[1]):
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: give a positive number of bytes, "
                                         f"or one with a K, M or G suffix (e.g. 512M)")
    unit = match[2].upper()
    return int(match[1]) << (10 * ("KMGT".index(unit) + 1) if unit else 0)


def parse_env(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` -> ``(NAME, VALUE)`` (the value may hold ``=``); argparse's ``type``."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"invalid variable {text!r}: give NAME=VALUE")
    return name, value


def _parse_mount(text: str) -> str:
    """argparse's ``type`` of ``--mount``: checked now, kept as text (it pickles)."""
    try:
        _mount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _mount(text: str) -> Any:
    """``emu.linux``'s ``Mount`` of ``HOST[:GUEST][:ro|rw]``. Raises ValueError (one line)."""
    from emu.linux import _fs
    parse = getattr(_fs, "parse_mount", None)
    if parse is None:
        raise ValueError("--mount is not available in this build")
    return parse(text)


def program_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Program:
    """The :class:`Program` of parsed options.

    Raises:
        ProgramError: no program, not found, a bad ``#!`` line, conflicting options.
    """
    if args.binary is None:
        raise ProgramError("a program to run is required")
    cwd = _working_directory(args)
    env = {} if args.clear_env else dict(os.environ if environ is None else environ)
    env.update(args.env)
    path, argv, scripts = resolve_program(args.binary, args.args)
    return Program(path, tuple(argv), tuple(env.items()), tuple(scripts), args.fs, cwd,
                   args.fs_writable, tuple(args.mount))


def _working_directory(args: argparse.Namespace) -> str | None:
    if args.cwd is not None and args.fs_root is not None and \
            os.path.realpath(args.cwd) != os.path.realpath(args.fs_root):
        raise ProgramError("--cwd and --fs-root name different directories: give one")
    cwd = args.cwd if args.cwd is not None else args.fs_root
    if cwd is not None and not os.path.isdir(cwd):
        raise ProgramError(f"{cwd}: not a directory (--cwd/--fs-root)")
    if args.fs == "none" and args.fs_writable and cwd is None:
        raise ProgramError("--fs-writable needs --fs-root DIR with --fs none")
    return cwd


def resolve_program(name: str, args: Sequence[str],
                    path: str | None = None) -> tuple[str, list[str], list[str]]:
    """``(ELF file, argv, scripts read)`` of running ``name args...`` from a shell.

    ``path``: the ``PATH`` to search (default the host's).

    Raises:
        ProgramError: not found (127), or a ``#!`` line the kernel refuses.
    """
    if "/" in name:
        file = name
    else:
        found = shutil.which(name, path=path)
        if found is None:
            raise ProgramError(f"{name}: command not found", NOT_FOUND)
        file = found
    argv = [name, *args]
    scripts: list[str] = []
    for _depth in range(MAX_INTERP_DEPTH + 1):
        shebang = _read_shebang(file)
        if shebang is None:
            return file, argv, scripts
        interp, arg = shebang
        scripts.append(file)
        # binfmt_script: argv[0] is dropped; interpreter, [arg], the script's path, argv[1:]
        argv = [interp, *([arg] if arg is not None else []), file, *argv[1:]]
        file = interp
        if not os.path.exists(interp):
            raise ProgramError(f"{scripts[-1]}: {interp}: bad interpreter: "
                               f"{os.strerror(errno.ENOENT)}", NOT_FOUND)
    raise ProgramError(f"{name}: {os.strerror(errno.ELOOP)} (#! interpreters nested over "
                       f"{MAX_INTERP_DEPTH} deep)", NOT_FOUND)


def _read_shebang(file: str) -> tuple[str, str | None] | None:
    """The interpreter line of ``file``, or None when it is not a script (or cannot
    be read: the loader then says why)."""
    try:
        with open(file, "rb") as f:
            head = f.read(BINPRM_BUF_SIZE)
    except OSError:
        return None
    try:
        parsed = parse_shebang(head)
    except ValueError as exc:
        raise ProgramError(f"{file}: {exc}", NOT_FOUND) from None
    if parsed is None:
        return None
    interp, arg = parsed
    return os.fsdecode(interp), None if arg is None else os.fsdecode(arg)


def parse_shebang(head: bytes) -> tuple[bytes, bytes | None] | None:
    """``load_script``'s reading of a file's first :data:`BINPRM_BUF_SIZE` bytes:
    ``(interpreter, optional argument)``, or None when they do not start with ``#!``.

    The buffer is zero-filled past the file's end. The line ends at a newline
    (or at the end of the buffer when the interpreter name is followed by a
    blank or NUL within it); blanks around it go; the
    interpreter ends at the first blank or NUL, the argument is the rest after
    the blanks that follow (inner blanks kept), up to a NUL.

    Raises:
        ValueError: ``ENOEXEC``: no interpreter, or an interpreter name the buffer cuts.
    """
    buf = head[:BINPRM_BUF_SIZE].ljust(BINPRM_BUF_SIZE, b"\0")    # bprm->buf is zeroed
    if not buf.startswith(b"#!"):
        return None
    end = buf.find(b"\n")
    if end < 0:
        start = len(buf) - len(buf[2:].lstrip(_BLANKS))
        if start == len(buf):
            raise ValueError("bad #! line: no interpreter")
        if not any(c in b" \t\0" for c in buf[start:]):
            raise ValueError(f"bad #! line: the interpreter name is longer than "
                             f"{BINPRM_BUF_SIZE - 2} bytes")
        end = len(buf)
    line = buf[2:end].strip(_BLANKS)
    if not line or line[:1] == b"\0":
        raise ValueError("bad #! line: no interpreter")
    sep = re.search(rb"[ \t\0]", line)
    if sep is None:
        return line, None
    interp = line[:sep.start()]
    if line[sep.start()] == 0:
        return interp, None
    arg = line[sep.start():].lstrip(_BLANKS).split(b"\0", 1)[0]
    return interp, arg or None
