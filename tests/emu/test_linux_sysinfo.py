"""System information, usage and limits (``emu/linux/_sys_info.py``, ``_rlimit.py``).

Rules pinned: ``sysinfo`` sees the machine (``mem_limit`` is all the RAM,
unmapped memory is free, ``procs`` the live tasks, ``mem_unit`` 1, uptime the
virtual clock rounded up); ``getrusage``, ``times`` and the CPU-time clocks are
the virtual clock, so two runs agree; resource limits follow ``do_prlimit``
(no raising a hard limit, ``cur <= max``, ``ESRCH`` for other processes) and
agree with what the emulator enforces (``RLIMIT_NOFILE`` is the descriptor
table, ``RLIMIT_AS`` is ``mem_limit`` and lowering it makes ``mmap`` fail);
one CPU, ``SCHED_OTHER``. Errors that do not depend on privilege are checked
against the same raw system calls run natively (``guest/c/hostile.c``).
"""

from __future__ import annotations

import errno
import io
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from emu import Machine
from emu._elf import PROCESS_STACK_SIZE
from emu.linux import SYSCALL_NUMBERS, SYSCALLS, Kernel, KernelError
from emu.linux._files import MAX_FDS
from emu.linux._rlimit import RLIM_INFINITY, RLIMIT_AS, RLIMIT_NOFILE, RLIMIT_STACK
from tests.guests import assert_as_linux

PYTHON = "/usr/bin/python3"
SYSINFO = struct.Struct("<q3Q6QHH4xQQI4x")
RUSAGE = struct.Struct("<qqqq14q")
RLIMIT = struct.Struct("<QQ")


@pytest.fixture(scope="module")
def hostile(guest_bin: Path) -> Path:
    return guest_bin / "hostile"


class Guest:
    """A loaded (not run) program's kernel, with a scratch page to pass buffers."""

    def __init__(self, hostile: Path, **options: object) -> None:
        self.m = Machine.from_elf(str(hostile), ["hostile"], **options)  # type: ignore[arg-type]
        assert self.m.kernel is not None
        self.k: Kernel = self.m.kernel
        self.buf = self.m.mem.map_anywhere(0x1000, name="scratch").start

    def call(self, name: str, *args: int) -> int:
        """The handler's result, or -errno."""
        try:
            return SYSCALLS[SYSCALL_NUMBERS[name]][0](self.k, *args)
        except KernelError as exc:
            return -exc.errno

    def read(self, size: int, offset: int = 0) -> bytes:
        return self.m.mem.read(self.buf + offset, size)

    def write(self, data: bytes, offset: int = 0) -> int:
        self.m.mem.write(self.buf + offset, data)
        return self.buf + offset


@pytest.fixture
def guest(hostile: Path) -> Iterator[Guest]:
    g = Guest(hostile)
    yield g
    g.m.close()


def _python(code: str, **options: object) -> tuple[int, str]:
    m = Machine.from_elf(PYTHON, ["python3", "-c", code], env={}, **options)  # type: ignore[arg-type]
    m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
    status = m.run(timeout=60)
    assert not m.stderr.getvalue(), m.stderr.getvalue().decode()
    return status, m.stdout.getvalue().decode()


# --- sysinfo ------------------------------------------------------------------------------
def test_sysinfo_describes_the_machine(guest: Guest) -> None:
    """totalram = mem_limit, freeram = what is not mapped, no swap, mem_unit 1,
    procs = live tasks; uptime is the virtual clock rounded up to a second."""
    assert guest.call("sysinfo", guest.buf) == 0
    info = SYSINFO.unpack(guest.read(SYSINFO.size))
    uptime, loads, (total, free, shared, buffers, swap, free_swap) = info[0], info[1:4], info[4:10]
    procs, mem_unit = info[10], info[14]
    mem = guest.m.mem
    assert (total, free) == (mem.limit, mem.limit - mem.mapped)
    assert (shared, buffers, swap, free_swap, loads) == (0, 0, 0, 0, (0, 0, 0))
    assert (procs, mem_unit, uptime) == (1, 1, 0)
    guest.m.clock = 1                               # 1 ns after boot: a second begun
    guest.call("sysinfo", guest.buf)
    assert SYSINFO.unpack(guest.read(SYSINFO.size))[0] == 1
    assert guest.call("sysinfo", 0x10) == -errno.EFAULT


def test_sort_runs_now_that_sysinfo_exists() -> None:
    """``sort`` sizes its buffer from ``sysinfo`` (the issue's first failure)."""
    m = Machine.from_elf("/usr/bin/sort", ["sort"], stdin=b"b\nc\na\n", env={})
    m.stdout = io.BytesIO()
    assert m.run(timeout=60) == 0
    assert m.stdout.getvalue() == b"a\nb\nc\n"
    assert not m.kernel.diagnostics.messages("unknown-syscall")  # type: ignore[union-attr]


# --- time used ---------------------------------------------------------------------------
def test_getrusage_and_times_are_the_virtual_clock(guest: Guest) -> None:
    """utime (RUSAGE_SELF and RUSAGE_THREAD) and tms_utime are the virtual clock;
    stime is 0; no children ran; maxrss (KiB) is the most memory mapped; times()
    returns the clock ticks since boot."""
    guest.m.clock = 2_345_678_901                  # 2.345678901 s of guest instructions
    for who in (0, 1):
        assert guest.call("getrusage", who, guest.buf) == 0
        usage = RUSAGE.unpack(guest.read(RUSAGE.size))
        assert usage[:4] == (2, 345_678, 0, 0)
        assert usage[4] == guest.m.mem.mapped // 1024
    assert guest.call("getrusage", (1 << 32) - 1, guest.buf) == 0        # RUSAGE_CHILDREN
    assert RUSAGE.unpack(guest.read(RUSAGE.size)) == (0,) * 18
    assert guest.call("getrusage", 2, guest.buf) == -errno.EINVAL
    assert guest.call("times", guest.buf) == 234
    assert struct.unpack("<4q", guest.read(32)) == (234, 0, 0, 0)
    assert guest.call("times", 0) == 234
    assert guest.call("clock_gettime", 2, guest.buf) == 0                 # CLOCK_PROCESS_CPUTIME_ID
    assert struct.unpack("<qq", guest.read(16)) == (2, 345_678_901)


def test_cpu_time_is_the_same_on_every_run() -> None:
    """With every instruction counted, a program's CPU time is its instruction
    count: non-zero and equal run to run (host time never leaks in)."""
    code = ("import os, resource, time; t = os.times(); r = resource.getrusage(0);"
            "print(t.user > 0, t.user, r.ru_utime, time.process_time_ns(), r.ru_maxrss > 0)")

    def once() -> str:
        m = Machine.from_elf(PYTHON, ["python3", "-c", code], env={})
        m.exact_clock = True
        m.stdout = io.BytesIO()
        assert m.run(timeout=60) == 0
        return m.stdout.getvalue().decode()
    first = once()
    assert first.startswith("True ") and first.endswith("True\n")
    assert once() == first


# --- limits ----------------------------------------------------------------------------
def test_limits_match_what_the_emulator_enforces(guest: Guest) -> None:
    """RLIMIT_NOFILE is the descriptor table (soft and hard), RLIMIT_STACK the
    mapped stack, RLIMIT_AS the machine's mem_limit."""
    def limit(resource: int) -> tuple[int, int]:
        assert guest.call("getrlimit", resource, guest.buf) == 0
        return RLIMIT.unpack(guest.read(RLIMIT.size))
    assert limit(RLIMIT_NOFILE) == (MAX_FDS, MAX_FDS)
    assert limit(RLIMIT_STACK) == (PROCESS_STACK_SIZE, RLIM_INFINITY)
    assert limit(RLIMIT_AS) == (guest.m.mem.limit, guest.m.mem.limit)
    for resource in range(16):
        assert guest.call("getrlimit", resource, guest.buf) == 0
    assert guest.call("getrlimit", 16, guest.buf) == -errno.EINVAL


def test_setting_limits_follows_do_prlimit(guest: Guest) -> None:
    """Soft up to hard and hard down are allowed (and read back); hard up is
    EPERM (no CAP_SYS_RESOURCE); cur > max is EINVAL; prlimit64 returns the old
    limit and takes pid 0 or the process's own, else ESRCH."""
    new, old = guest.buf, guest.buf + 16
    guest.write(RLIMIT.pack(100, 500), 0)
    assert guest.call("setrlimit", RLIMIT_NOFILE, new) == 0
    guest.write(RLIMIT.pack(200, 600), 0)
    assert guest.call("setrlimit", RLIMIT_NOFILE, new) == -errno.EPERM
    guest.write(RLIMIT.pack(600, 500), 0)
    assert guest.call("setrlimit", RLIMIT_NOFILE, new) == -errno.EINVAL
    guest.write(RLIMIT.pack(500, 500), 0)
    assert guest.call("prlimit64", guest.k.pid, RLIMIT_NOFILE, new, old) == 0
    assert RLIMIT.unpack(guest.read(16, 16)) == (100, 500)
    assert guest.call("prlimit64", 0, RLIMIT_NOFILE, 0, old) == 0
    assert RLIMIT.unpack(guest.read(16, 16)) == (500, 500)
    assert guest.call("prlimit64", guest.k.pid + 1, RLIMIT_NOFILE, 0, old) == -errno.ESRCH
    assert guest.call("prlimit64", 0, 99, 0, old) == -errno.EINVAL
    assert guest.call("setrlimit", RLIMIT_NOFILE, 0x10) == -errno.EFAULT


def test_lowering_rlimit_as_makes_mmap_fail(guest: Guest) -> None:
    """``may_expand_vm``: past RLIMIT_AS a new mapping is ENOMEM; raising the soft
    limit back (up to the hard one) allows it again."""
    mapped, limit = guest.m.mem.mapped, guest.m.mem.limit
    guest.write(RLIMIT.pack(mapped + 0x1000, limit))
    assert guest.call("setrlimit", RLIMIT_AS, guest.buf) == 0
    assert guest.call("mmap", 0, 0x10000, 3, 0x22, (1 << 64) - 1, 0) == -errno.ENOMEM
    guest.write(RLIMIT.pack(limit, limit))
    assert guest.call("setrlimit", RLIMIT_AS, guest.buf) == 0
    assert guest.call("mmap", 0, 0x10000, 3, 0x22, (1 << 64) - 1, 0) > 0


def test_limits_seen_from_python_and_the_shells() -> None:
    """What the C library and Python make of them (``resource``, ``ulimit``)."""
    code = ("import resource as r; print(r.getrlimit(r.RLIMIT_NOFILE), r.getrlimit(r.RLIMIT_STACK));"
            "r.setrlimit(r.RLIMIT_NOFILE, (64, 1024)); print(r.getrlimit(r.RLIMIT_NOFILE))\n"
            "try: r.setrlimit(r.RLIMIT_NOFILE, (64, 2048))\nexcept ValueError as e: print(e)")
    assert _python(code) == \
        (0, "(1024, 1024) (8388608, -1)\n(64, 1024)\nnot allowed to raise maximum limit\n")
    m = Machine.from_elf("/usr/bin/dash", ["dash", "-c", "ulimit -n; ulimit -s; ulimit -Hn"], env={})
    m.stdout = io.BytesIO()
    assert m.run(timeout=60) == 0
    assert m.stdout.getvalue() == b"1024\n8192\n1024\n"


# --- scheduling -----------------------------------------------------------------------------
def test_one_cpu_and_sched_other(guest: Guest) -> None:
    """The affinity mask is CPU 0 alone (8 bytes written); a mask without CPU 0
    is EINVAL; the policy is SCHED_OTHER at priority 0."""
    assert guest.call("sched_getaffinity", 0, 128, guest.buf) == 8
    assert guest.read(8) == (1).to_bytes(8, "little")
    assert _python("import os; print(os.sched_getaffinity(0), os.cpu_count() >= 1)") == \
        (0, "{0} True\n")
    guest.write(b"\x02" + bytes(7))
    assert guest.call("sched_setaffinity", 0, 8, guest.buf) == -errno.EINVAL
    guest.write(b"\x03" + bytes(7))
    assert guest.call("sched_setaffinity", 0, 8, guest.buf) == 0
    assert guest.call("sched_getscheduler", 0) == 0
    assert guest.call("sched_getparam", 0, guest.buf) == 0
    guest.write(struct.pack("<i", 10))
    assert guest.call("sched_setscheduler", 0, 1, guest.buf) == -errno.EPERM    # SCHED_FIFO
    guest.write(struct.pack("<i", 0))
    assert guest.call("sched_setscheduler", 0, 3, guest.buf) == 0               # SCHED_BATCH


# Raw calls whose results do not depend on the host's privileges or CPUs.
DIFFERENTIAL = {
    "getrusage bad who": ["98", "5", "buf"],
    "getrusage children": ["98", "-1", "buf"],
    "sysinfo to 0x10": ["99", "0x10"],
    "getrlimit bad resource": ["97", "99", "buf"],
    "setrlimit bad resource": ["160", "99", "buf"],
    "prlimit64 bad resource": ["302", "0", "16", "0", "buf"],
    "prlimit64 no such pid": ["302", "0x3ffffff0", "7", "0", "buf"],
    "sched_getaffinity 4 bytes": ["204", "0", "4", "buf"],
    "sched_getaffinity 12 bytes": ["204", "0", "12", "buf"],
    "sched_setaffinity empty mask": ["203", "0", "8", "buf"],
    "sched_getscheduler -1": ["145", "-1"],
    "sched_getscheduler no such pid": ["145", "0x3ffffff0"],
    "sched_getparam NULL": ["143", "0", "0"],
    "sched_get_priority_max": ["146", "0", ",", "146", "1", ",", "146", "2", ",", "146", "99"],
    "sched_get_priority_min": ["147", "0", ",", "147", "1", ",", "147", "99"],
}


def test_errors_as_linux_gives_them(hostile: Path, tmp_path: Path) -> None:
    assert_as_linux(hostile, tmp_path, DIFFERENTIAL)
