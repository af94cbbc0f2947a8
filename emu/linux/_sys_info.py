"""System calls that report on the system: time, randomness, uname, limits, usage.

Wall-clock time is the host's (sleeping is virtual: see :mod:`._sys_thread`).
Time the process used, and time since "boot", are the virtual clock
(``Machine.now()``, one retired instruction a nanosecond), so ``times``,
``getrusage``, ``sysinfo`` and the CPU-time clocks agree with each other and are
the same on every run. Randomness comes from the kernel's seeded generator
(``from_elf(seed=...)``), so two runs of one program see the same bytes.

Sources: ``kernel/sys.c`` (``do_sysinfo``, ``getrusage``, ``do_sys_times``,
``do_prlimit``, ``SYSCALL_DEFINE4(prlimit64)``), ``include/uapi/linux/sysinfo.h``,
``include/uapi/linux/resource.h``, ``include/uapi/linux/times.h``.
"""

from __future__ import annotations

import errno
import struct
import time
import weakref

from .._memory import PROT_W
from ._kernel import Kernel
from ._registry import KernelError, s32, syscall
from ._rlimit import get_rlimit, set_rlimit
from ._structs import RLIMIT, TIMESPEC, TIMEVAL, pack_utsname

_MAX_CLOCK = 11            # CLOCK_REALTIME .. CLOCK_TAI
CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID = 2, 3
RUSAGE_SELF, RUSAGE_CHILDREN, RUSAGE_THREAD = 0, -1, 1
USER_HZ = 100              # clock_t ticks a second (sysconf(_SC_CLK_TCK))
_NS = 10**9
# struct sysinfo (64-bit: no _f padding): uptime loads[3] totalram freeram sharedram
# bufferram totalswap freeswap procs pad totalhigh freehigh mem_unit
SYSINFO = struct.Struct("<q3Q6QHH4xQQI4x")
# struct rusage: ru_utime ru_stime (timeval), then 14 longs from ru_maxrss to ru_nivcsw
RUSAGE = struct.Struct("<qqqq14q")
TMS = struct.Struct("<4q")          # struct tms: utime stime cutime cstime (clock_t)
_MAX_RANDOM = 1 << 25
_CHUNK = 1 << 20


@syscall("clock_gettime")
def sys_clock_gettime(k: Kernel, clock: int, tp: int) -> int:
    clock = s32(clock)
    if not 0 <= clock <= _MAX_CLOCK:
        raise KernelError(errno.EINVAL)
    if clock in (CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID):
        ns = k.m.now()              # the guest's own time, not the host process's
    else:
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


@syscall("sysinfo")
def sys_sysinfo(k: Kernel, info: int) -> int:
    """``do_sysinfo``: uptime in whole seconds rounded up, no load, no swap; the
    machine's ``mem_limit`` is all the RAM there is, what is not mapped is free;
    ``procs`` is ``nr_threads`` (live tasks)."""
    ns = k.m.now()
    uptime = ns // _NS + (1 if ns % _NS else 0)
    mem = k.m.mem
    procs = sum(1 for task in k.m.tasks if not task.done)
    k.write(info, SYSINFO.pack(uptime, 0, 0, 0, mem.limit, max(0, mem.limit - mem.mapped),
                               0, 0, 0, 0, min(procs, 0xFFFF), 0, 0, 0, 1))
    return 0


# Kernel -> the most memory it had mapped when asked (ru_maxrss is a high-water mark).
_MAXRSS: weakref.WeakKeyDictionary[Kernel, int] = weakref.WeakKeyDictionary()


@syscall("getrusage")
def sys_getrusage(k: Kernel, who: int, usage: int) -> int:
    """User time is the virtual clock (``RUSAGE_THREAD`` too: threads are not
    timed apart), system time 0; ``ru_maxrss`` (KiB) the most memory mapped.
    Children: none have run (all zero)."""
    who = s32(who)
    if who not in (RUSAGE_SELF, RUSAGE_CHILDREN, RUSAGE_THREAD):
        raise KernelError(errno.EINVAL)
    utime = maxrss = 0
    if who != RUSAGE_CHILDREN:
        utime = k.m.now()
        maxrss = _MAXRSS[k] = max(_MAXRSS.get(k, 0), k.m.mem.mapped)
    k.write(usage, RUSAGE.pack(utime // _NS, utime % _NS // 1000, 0, 0, maxrss // 1024,
                               *[0] * 13))
    return 0


@syscall("times")
def sys_times(k: Kernel, tbuf: int) -> int:
    """``do_sys_times``: the process's user time in clock ticks (system time 0,
    no children); returns the ticks since boot (both the virtual clock)."""
    ticks = k.m.now() * USER_HZ // _NS
    if tbuf:
        k.write(tbuf, TMS.pack(ticks, 0, 0, 0))
    return ticks


def _own_process(k: Kernel, pid: int) -> None:
    """``find_task_by_vpid``: 0, the process or one of its threads; else ``ESRCH``."""
    if pid != 0 and pid != k.pid and all(task.tid != pid for task in k.threads):
        raise KernelError(errno.ESRCH)


@syscall("prlimit64")
def sys_prlimit64(k: Kernel, pid: int, resource: int, new: int, old: int) -> int:
    """The new limit is read first, the old one written after the change."""
    resource = s32(resource)
    limit = RLIMIT.unpack(k.read(new, RLIMIT.size)) if new else None
    _own_process(k, s32(pid))
    previous = get_rlimit(k, resource)
    if limit is not None:
        set_rlimit(k, resource, *limit)
    if old:
        k.write(old, RLIMIT.pack(*previous))
    return 0


@syscall("getrlimit")
def sys_getrlimit(k: Kernel, resource: int, rlim: int) -> int:
    k.write(rlim, RLIMIT.pack(*get_rlimit(k, s32(resource))))
    return 0


@syscall("setrlimit")
def sys_setrlimit(k: Kernel, resource: int, rlim: int) -> int:
    limit = RLIMIT.unpack(k.read(rlim, RLIMIT.size))
    set_rlimit(k, s32(resource), *limit)
    return 0


# --- scheduling: one CPU, SCHED_OTHER (kernel/sched/core.c, kernel/sched/syscalls.c) -------
SCHED_OTHER, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE = 0, 1, 2, 3, 5
_CPUMASK_SIZE = 8               # cpumask_size(): one unsigned long
_POLICIES = {SCHED_OTHER: (0, 0), SCHED_BATCH: (0, 0), SCHED_IDLE: (0, 0),
             SCHED_FIFO: (1, 99), SCHED_RR: (1, 99)}     # policy -> (min, max) priority


@syscall("sched_getaffinity")
def sys_sched_getaffinity(k: Kernel, pid: int, size: int, mask: int) -> int:
    """One CPU: the mask is CPU 0; the length must hold it and be a multiple of
    ``sizeof(long)``; the result is the bytes written."""
    size &= 0xFFFF_FFFF
    if not size or size % 8:
        raise KernelError(errno.EINVAL)
    _own_process(k, s32(pid))
    k.write(mask, (1).to_bytes(_CPUMASK_SIZE, "little"))
    return _CPUMASK_SIZE


@syscall("sched_setaffinity")
def sys_sched_setaffinity(k: Kernel, pid: int, size: int, mask: int) -> int:
    """A mask without CPU 0 leaves no CPU to run on: ``EINVAL``. A shorter mask
    is zero-extended (``get_user_cpu_mask``)."""
    raw = k.read(mask, min(size, _CPUMASK_SIZE))
    _own_process(k, s32(pid))
    if not raw or not raw[0] & 1:
        raise KernelError(errno.EINVAL)
    return 0


@syscall("sched_getscheduler")
def sys_sched_getscheduler(k: Kernel, pid: int) -> int:
    if s32(pid) < 0:
        raise KernelError(errno.EINVAL)
    _own_process(k, s32(pid))
    return SCHED_OTHER


@syscall("sched_getparam")
def sys_sched_getparam(k: Kernel, pid: int, param: int) -> int:
    if not param or s32(pid) < 0:
        raise KernelError(errno.EINVAL)
    _own_process(k, s32(pid))
    k.write(param, bytes(4))            # struct sched_param: sched_priority 0
    return 0


@syscall("sched_setscheduler")
def sys_sched_setscheduler(k: Kernel, pid: int, policy: int, param: int) -> int:
    """Normal policies at priority 0 are allowed; real-time ones need
    ``RLIMIT_RTPRIO`` (0 here): ``EPERM``."""
    if not param or s32(pid) < 0:
        raise KernelError(errno.EINVAL)
    priority = struct.unpack("<i", k.read(param, 4))[0]
    _own_process(k, s32(pid))
    bounds = _POLICIES.get(s32(policy))
    if bounds is None or not bounds[0] <= priority <= bounds[1]:
        raise KernelError(errno.EINVAL)
    if bounds[1]:
        raise KernelError(errno.EPERM)
    return 0


@syscall("sched_get_priority_max")
def sys_sched_get_priority_max(k: Kernel, policy: int) -> int:
    bounds = _POLICIES.get(s32(policy))
    if bounds is None:
        raise KernelError(errno.EINVAL)
    return bounds[1]


@syscall("sched_get_priority_min")
def sys_sched_get_priority_min(k: Kernel, policy: int) -> int:
    bounds = _POLICIES.get(s32(policy))
    if bounds is None:
        raise KernelError(errno.EINVAL)
    return bounds[0]
