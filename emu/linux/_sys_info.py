"""System calls that report on the system: time, randomness, uname, limits.

Time is the host's (sleeping is virtual: see :mod:`._sys_thread`). Randomness comes
from the kernel's seeded generator (``from_elf(seed=...)``), so two runs of one
program see the same bytes.
"""

from __future__ import annotations

import errno
import time

from .._memory import PROT_W
from ._kernel import Kernel
from ._registry import KernelError, s32, syscall
from ._structs import RLIMIT, RLIMITS, TIMESPEC, TIMEVAL, pack_utsname

_MAX_CLOCK = 11            # CLOCK_REALTIME .. CLOCK_TAI
_MAX_RANDOM = 1 << 25
_CHUNK = 1 << 20


@syscall("clock_gettime")
def sys_clock_gettime(k: Kernel, clock: int, tp: int) -> int:
    clock = s32(clock)
    if not 0 <= clock <= _MAX_CLOCK:
        raise KernelError(errno.EINVAL)
    try:
        ns = time.clock_gettime_ns(clock)
    except OSError:
        raise KernelError(errno.EINVAL) from None
    k.write(tp, TIMESPEC.pack(ns // 10**9, ns % 10**9))
    return 0


@syscall("clock_getres")
def sys_clock_getres(k: Kernel, clock: int, res: int) -> int:
    if res:
        k.write(res, TIMESPEC.pack(0, 1))
    return 0


@syscall("gettimeofday")
def sys_gettimeofday(k: Kernel, tv: int, tz: int) -> int:
    ns = time.time_ns()
    if tv:
        k.write(tv, TIMEVAL.pack(ns // 10**9, ns % 10**9 // 1000))
    if tz:
        k.write(tz, bytes(8))
    return 0


@syscall("time")
def sys_time(k: Kernel, tloc: int) -> int:
    now = int(time.time())
    if tloc:
        k.write(tloc, now.to_bytes(8, "little"))
    return now


@syscall("getrandom")
def sys_getrandom(k: Kernel, buf: int, count: int, flags: int) -> int:
    # Only as much as the guest's buffer holds, in bounded chunks (no host-sized copy).
    want = min(count, _MAX_RANDOM)
    count = k.mem.span(buf, want, PROT_W) if want else 0
    if want and not count:
        raise KernelError(errno.EFAULT)
    for off in range(0, count, _CHUNK):
        k.write(buf + off, k.rng.randbytes(min(_CHUNK, count - off)))
    return count


@syscall("uname")
def sys_uname(k: Kernel, buf: int) -> int:
    k.write(buf, pack_utsname())
    return 0


@syscall("prlimit64")
def sys_prlimit64(k: Kernel, pid: int, resource: int, new: int, old: int) -> int:
    if s32(pid) not in (0, k.pid):
        raise KernelError(errno.ESRCH)
    limits = RLIMITS.get(s32(resource))
    if limits is None:
        raise KernelError(errno.EINVAL)
    if old:
        k.write(old, RLIMIT.pack(*limits))
    return 0


@syscall("getrlimit")
def sys_getrlimit(k: Kernel, resource: int, rlim: int) -> int:
    return sys_prlimit64(k, 0, resource, 0, rlim)


@syscall("setrlimit")
def sys_setrlimit(k: Kernel, resource: int, rlim: int) -> int:
    if s32(resource) not in RLIMITS:
        raise KernelError(errno.EINVAL)
    return 0


@syscall("sched_getaffinity")
def sys_sched_getaffinity(k: Kernel, pid: int, size: int, mask: int) -> int:
    """One CPU."""
    if size < 8:
        raise KernelError(errno.EINVAL)
    k.write(mask, (1).to_bytes(8, "little"))
    return 8
