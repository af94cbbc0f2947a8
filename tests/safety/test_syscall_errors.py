"""No Python exception escapes from a system call.

Rules pinned: hostile arguments (offsets past 2^63, non-canonical pointers, fds
out of range, the top of the address space) give the guest the errno Linux
gives, differentially against the same raw syscalls run natively
(``guest/c/hostile.c``); a host exception a handler lets through becomes an
errno centrally (``OSError`` its own, ``MemoryError`` ENOMEM, ``UcError``
EFAULT, ``OverflowError``/``ValueError``/``UnicodeError`` EINVAL,
``struct.error`` EOVERFLOW), reported once as an emulator bug, never a
traceback; what stops a run on purpose (an ``EmuError``, a client's callback)
still stops it.
"""

from __future__ import annotations

import errno
import io
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from unicorn import UcError
from unicorn.unicorn_const import UC_ERR_READ_UNMAPPED

from emu import GuestFault, Machine
from emu.linux import SYSCALL_NUMBERS, SYSCALLS
from tests.guests import guest_bin as _guest_bin

ROOT = Path(__file__).resolve().parents[2]
OPEN = ["257", "-100", "@data", "0", ","]          # openat(AT_FDCWD, "data", O_RDONLY) = 3

# name -> arguments of hostile; each result must be what Linux returns.
DIFFERENTIAL = {
    "pread64 at 2^63": [*OPEN, "17", "3", "buf", "4", "0x8000000000000000"],
    "pread64 at -1": [*OPEN, "17", "3", "buf", "4", "-1"],
    "pwrite64 at 2^63": [*OPEN, "18", "3", "buf", "4", "0x8000000000000000"],
    "read of 2^63-1 bytes": [*OPEN, "0", "3", "buf", "0x7fffffffffffffff"],
    "lseek to 2^63": [*OPEN, "8", "3", "0x8000000000000000", "0"],
    "lseek whence 2^31-1": [*OPEN, "8", "3", "0", "0x7fffffff"],
    "lseek end + 2^63-1": [*OPEN, "8", "3", "0x7fffffffffffffff", "2"],
    "mmap MAP_FIXED at the top": ["9", "0xfffffffffffff000", "4096", "3", "0x32", "-1", "0"],
    "mmap of 2^64-4096 bytes": ["9", "0", "0xfffffffffffff000", "3", "0x22", "-1", "0"],
    "mmap at offset 2^64-4096": [*OPEN, "9", "0", "4096", "1", "2", "3", "0xfffffffffffff000"],
    "munmap past user space": ["11", "0x7fff00000000", "0x7fffffffffff"],
    "mprotect past user space": ["10", "0x400000", "0xffffffffffff0000", "7"],
    "dup2 to -5": ["33", "1", "-5"],
    "dup2 to 2^31-1": ["33", "1", "0x7fffffff"],
    "dup3 onto itself": ["292", "1", "1", "0"],
    "F_DUPFD -7": ["72", "1", "0", "-7"],
    "F_DUPFD 2^31-1": ["72", "1", "0", "0x7fffffff"],
    "fcntl unknown cmd": ["72", "1", "0x7fff", "0"],
    "close -1": ["3", "-1"],
    "getcwd into 0 bytes": ["79", "buf", "0"],
    "uname at 0x10": ["63", "0x10"],
    "clock_gettime bad clock": ["228", "0x7fffffff", "buf"],
    "openat kernel pointer": ["257", "-100", "0xffff800000000000", "0", "0"],
    "openat non-canonical": ["257", "-100", "0x8000000000000000", "0", "0"],
    "write non-canonical": ["1", "1", "0x8000000000000000", "5"],
    "writev 2^31-1 vectors": ["20", "1", "buf", "0x7fffffff"],
    "fstat non-canonical": ["5", "1", "0x8000000000000000"],
    "futex non-canonical": ["202", "0x8000000000000000", "0", "1", "0", "0", "0"],
    "rt_sigaction bad signal": ["13", "0x7fffffff", "buf", "0", "8"],
    "rt_sigprocmask huge size": ["14", "0", "buf", "0", "0x7fffffffffffffff"],
    "getdents64 on a pipe": ["217", "1", "buf", "0x7fffffffffffffff"],
}

# Syscalls the sweep leaves out: they end or reshape the process (its own code could go).
# Calls that end the process, replace or duplicate it, unmap its code, write to its
# output, or (select, pselect6, ppoll with no descriptor and no timeout) wait
# forever as Linux does: the only process waiting forever is a deadlock report.
_SWEEP_SKIP = {"exit", "exit_group", "kill", "tgkill", "tkill", "rt_sigreturn", "clone", "clone3",
               "fork", "vfork", "execve", "execveat", "munmap", "mmap", "mremap", "brk", "mprotect",
               "write", "writev", "pwrite64", "select", "pselect6", "ppoll"}
VECTORS = [
    ["0x8000000000000000"] * 6, ["0x7fffffffffffffff"] * 6, ["-1"] * 6,
    ["0x0010000000400000"] * 6,                 # non-canonical, aliases the program
    ["buf", "0xffffffffffffffff", "buf", "0x8000000000000000", "-1", "buf"],
    ["1", "buf", "0x7fffffff", "buf", "0xffffffff", "0"], ["0"] * 6,
]


@pytest.fixture(scope="module")
def hostile() -> Path:
    return _guest_bin() / "hostile"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "data").write_bytes(b"0123456789abcdef")
    return tmp_path


def _emulated(hostile: Path, args: list[str], root: Path | None = None) -> list[int]:
    """The results hostile printed (on fd 2 once a syscall closed fd 1)."""
    m = Machine.from_elf(str(hostile), ["hostile", *args], fs_root=str(root) if root else None)
    m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
    assert m.run(max_insns=10**7) == 0
    return [int(v) for v in m.stdout.getvalue().split() + m.stderr.getvalue().split()]


def test_hostile_arguments_get_the_errno_linux_gives(hostile: Path, root: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    for name, args in DIFFERENTIAL.items():
        native = subprocess.run([str(hostile), *args], cwd=root, capture_output=True, timeout=10)
        expected = [int(v) for v in native.stdout.split()]
        assert _emulated(hostile, args, root) == expected, name
    assert "kprobe-emu" not in capsys.readouterr().err       # no emulator diagnostic


def test_every_syscall_survives_hostile_arguments(hostile: Path, root: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Each implemented syscall with seven hostile argument vectors: results are
    results or -errno (-4095..-1), and no handler needs the central net."""
    names = {nr: name for name, nr in SYSCALL_NUMBERS.items()}
    for nr in sorted(SYSCALLS):
        if names.get(nr) in _SWEEP_SKIP:
            continue
        args = [a for vector in VECTORS for a in (str(nr), *vector, ",")]
        results = _emulated(hostile, args, root)
        assert 0 < len(results) <= len(VECTORS), names.get(nr)     # fds 1 and 2 may go
        assert all(r >= -4095 for r in results), (names.get(nr), results)
    assert "the emulator failed" not in capsys.readouterr().err


@pytest.mark.parametrize(("redirect", "code"), [(">&-", errno.EBADF), ("> /dev/full", errno.ENOSPC)])
def test_writing_to_a_closed_or_full_stdout_is_an_errno(hostile: Path, redirect: str,
                                                        code: int) -> None:
    """The guest's write fails as Linux's would; hostile prints that on fd 2."""
    cmd = f"{sys.executable} -m kprobe_emu run {hostile} 1 1 @hello 5 {redirect}"
    done = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"-{code}\n"


# --- the central net ---------------------------------------------------------------------
FAKE_NR = 1000                          # no x86-64 system call has this number


@pytest.fixture
def raising() -> Iterator[Callable[[list[BaseException]], None]]:
    """Install a handler at FAKE_NR that raises the next exception of a list."""
    def install(excs: list[BaseException]) -> None:
        it = iter(excs)

        def handler(k: object) -> int:
            raise next(it)
        SYSCALLS[FAKE_NR] = (handler, 0)
    yield install
    SYSCALLS.pop(FAKE_NR, None)


HOST_ERRORS: list[tuple[Callable[[], BaseException], int]] = [
    (lambda: OverflowError("Python int too large to convert to C long"), errno.EINVAL),
    (lambda: ValueError("negative file descriptor"), errno.EINVAL),
    (lambda: UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), errno.EINVAL),
    (lambda: struct.error("'i' format requires -2147483648 <= number <= 2147483647"),
     errno.EOVERFLOW),
    (MemoryError, errno.ENOMEM),
    (lambda: UcError(UC_ERR_READ_UNMAPPED), errno.EFAULT),
    (lambda: OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
    (lambda: OSError("no errno"), errno.EIO),
    (lambda: KeyError(7), errno.EINVAL),
]


def test_host_exceptions_become_errnos_reported_once(hostile: Path, raising: Callable[..., None],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    excs = [make() for _round in range(2) for make, _code in HOST_ERRORS]    # each reported once
    raising(excs)
    results = _emulated(hostile, [a for _ in excs for a in (str(FAKE_NR), ",")])
    assert results == [-code for _make, code in HOST_ERRORS] * 2
    err = capsys.readouterr().err
    for make, code in HOST_ERRORS:
        exc = make()
        kind = type(exc).__name__ if type(exc).__module__ == "builtins" else \
            f"{type(exc).__module__.split('.')[0]}.{type(exc).__name__}"
        if isinstance(exc, OSError):
            assert kind not in err               # the host's answer, not a bug
        else:
            assert err.count(f"failed with {kind}") == 1, kind
            assert f"returns -{errno.errorcode[code]}" in err
    assert "Traceback" not in err


def test_what_stops_a_run_on_purpose_still_stops_it(hostile: Path,
                                                    raising: Callable[..., None]) -> None:
    raising([GuestFault("guest fault: a deliberate stop", rip=0, reason="exception")])
    with pytest.raises(GuestFault, match="deliberate"):
        _emulated(hostile, [str(FAKE_NR)])
    raising([KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        _emulated(hostile, [str(FAKE_NR)])


class _ClientError(OSError):
    pass


def test_a_client_callback_error_during_a_syscall_stops_the_run() -> None:
    """An ``on_object_mapped`` callback raising during the interpreter's mmap (as a
    pending probe's registration does with ENOENT) ends ``run`` with that error."""
    bins = _guest_bin()
    m = Machine.from_elf(str(bins / "parse.dyn"), ["parse", "80"])
    m.stdout, m.stderr = io.BytesIO(), io.BytesIO()

    def refuse(obj: object) -> None:
        raise _ClientError(errno.ENOENT, "no such symbol")
    m.on_object_mapped.append(refuse)
    with pytest.raises(_ClientError):
        m.run()
