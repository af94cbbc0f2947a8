"""The Linux syscall layer: the table, unknown calls, memory calls, signals.

Rules pinned (issue #4): an unknown system call returns -ENOSYS and is reported
once (stderr and ``m.unknown_syscalls``); handlers are a table; mmap, mprotect,
munmap, mremap, madvise(MADV_DONTNEED) and brk behave as in mm/ (splits, holes,
moves, zero-fill); a process killed by a signal exits with 128 + signo.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from emu import Machine
from emu.linux import SYSCALL_NUMBERS, SYSCALLS, KernelError, syscall
from tests.guests import run_native

# What issue #4 lists as needed by glibc and musl static programs.
REQUIRED = """read write writev openat close lseek fstat newfstatat brk mmap munmap mprotect
    mremap madvise arch_prctl set_tid_address set_robust_list rseq prlimit64 getrandom uname
    readlink clock_gettime gettimeofday getpid gettid getuid geteuid getgid getegid
    rt_sigaction rt_sigprocmask sigaltstack ioctl exit exit_group""".split()


def _sysprobe(guest_bin: Path, *args: str, **options: object) -> tuple[int, str, Machine]:
    m = Machine.from_elf(str(guest_bin / "sysprobe"), ["sysprobe", *args], **options)  # type: ignore[arg-type]
    m.stdout = io.BytesIO()
    status = m.run()
    return status, m.stdout.getvalue().decode(), m


def test_required_syscalls_have_handlers() -> None:
    """Every system call the issue lists is in the table."""
    missing = [name for name in REQUIRED if SYSCALL_NUMBERS[name] not in SYSCALLS]
    assert missing == []


def test_unknown_syscall_is_enosys_and_reported_once(guest_bin: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Two calls of syscall 1000: both get -ENOSYS, one entry in the log (not on stderr)."""
    status, out, m = _sysprobe(guest_bin, "nosys")
    assert status == 0
    assert out == "syscall 1000: -1 errno 38\n" * 2
    assert m.unknown_syscalls == {1000: "syscall_1000"}
    assert capsys.readouterr().err == ""
    assert m.kernel is not None
    assert [line for line in m.kernel.diagnostics.messages() if "unknown system call 1000" in line] != []
    assert m.kernel.diagnostics.counts["unknown-syscall"] == 1


def test_memory_syscalls(guest_bin: Path) -> None:
    """mmap/mprotect split, munmap hole, mremap move, MADV_DONTNEED zero, brk: as natively."""
    status, out, _m = _sysprobe(guest_bin, "memory")
    assert (status, out) == (0, "memory ok: aa z\n")
    assert run_native([str(guest_bin / "sysprobe"), "memory"]) == (0, out.encode())


def test_process_facts(guest_bin: Path) -> None:
    """uname, getpid == gettid for the main thread, /proc/self/exe, a moving clock."""
    status, out, m = _sysprobe(guest_bin, "info")
    lines = out.splitlines()
    assert status == 0
    assert lines[0] == "Linux x86_64"
    assert lines[1] == "pid==tid 1 uid 1000"
    assert lines[2] == f"exe {(guest_bin / 'sysprobe').resolve()}"
    assert lines[4:] == ["clock moves 1", "pagesize 4096"]


def test_abort_ends_the_process_with_sigabrt(guest_bin: Path) -> None:
    """abort() raises SIGABRT at itself: status 128 + 6, as a shell reports it natively."""
    status, _out, m = _sysprobe(guest_bin, "abort")
    assert status == 134
    assert m.kernel is not None and m.kernel.exited is not None and m.kernel.exited.signal == 6
    assert run_native([str(guest_bin / "sysprobe"), "abort"])[0] == 134


def test_a_handler_can_be_added_to_the_table(guest_bin: Path) -> None:
    """The table is a registry: a handler registered with @syscall replaces the stock one."""
    nr = SYSCALL_NUMBERS["getpid"]
    saved = SYSCALLS[nr]
    calls = []
    try:
        @syscall("getpid")
        def fake_getpid(k: object) -> int:
            calls.append(k)
            raise KernelError(1)                   # EPERM: visible in the guest's output
        _status, out, _m = _sysprobe(guest_bin, "info")
    finally:
        SYSCALLS[nr] = saved
    assert calls and "pid==tid 0" in out


def test_run_twice_is_an_error(guest_bin: Path) -> None:
    """A process runs once; run() on a machine without a program is an error too."""
    from emu import EmuError
    _status, _out, m = _sysprobe(guest_bin, "info")
    with pytest.raises(EmuError, match="already run"):
        m.run()
    with pytest.raises(EmuError, match="from_elf"):
        Machine().run()


def test_instruction_budget_of_run(guest_bin: Path) -> None:
    """run(max_insns=N) stops a runaway guest with GuestFault(reason='insn-budget')."""
    from emu import GuestFault
    m = Machine.from_elf(str(guest_bin / "fib.static"), ["fib", "40"])
    with pytest.raises(GuestFault) as info:
        m.run(max_insns=100_000)
    assert info.value.reason == "insn-budget" and "100000" in str(info.value)


def test_call_between_runs_leaves_the_process_alone(guest_bin: Path) -> None:
    """m.call() before a run and after a stopped run does not disturb the process:
    the next run() starts (or resumes) where the process is."""
    from emu import GuestFault
    m = Machine.from_elf(str(guest_bin / "fib.static"), ["fib", "22"])
    m.stdout = io.BytesIO()
    assert m.call("fib", 20) == 6765
    with pytest.raises(GuestFault):
        m.run(max_insns=50_000)
    assert m.call("fib", 10) == 55
    assert m.run() == 17711 % 256
    assert m.stdout.getvalue() == b"fib(22) = 17711\n"


def test_public_names() -> None:
    """Every name in __all__ of emu and emu.linux exists (trio's export test)."""
    import emu
    import emu.linux
    for module in (emu, emu.linux):
        assert [name for name in module.__all__ if not hasattr(module, name)] == []
