"""Threads: ``clone`` as ``pthread_create`` uses it, futexes, thread exit, sleeping.

Every thread is a task of the machine's scheduler (:mod:`emu._sched`); a futex
wait parks the task there and a wake makes it runnable, so a pthread program
runs the same way for a given seed. Rules from kernel/fork.c (``copy_process``
flag checks), kernel/futex/ (``futex_wait``, ``futex_wake``, ``futex_requeue``)
and kernel/exit.c (``do_exit``: ``clear_child_tid`` is zeroed and woken, the
last thread out ends the process). ``nanosleep`` and ``clock_nanosleep`` wait
on the virtual clock (:attr:`Machine.clock`), never on the host's.

New processes are :mod:`._sys_process`'s. Not emulated: ``clone3`` (``-ENOSYS``,
so the C library falls back to ``clone``), priority-inheritance futexes and ``FUTEX_WAKE_OP`` (``-ENOSYS``).
"""

from __future__ import annotations

import errno
import struct
import time
from typing import TYPE_CHECKING, Any

from unicorn.x86_const import (
    UC_X86_REG_FS_BASE,
    UC_X86_REG_R11,
    UC_X86_REG_RAX,
    UC_X86_REG_RCX,
    UC_X86_REG_RIP,
    UC_X86_REG_RSP,
)

from .._errors import GuestFault
from .._regtable import RIP
from .._sched import Scheduler
from ._futex import FUTEX_BITSET_MATCH_ANY
from ._kernel import Kernel
from ._registry import KernelError, s32, syscall
from ._signal import ThreadSignals, thread_signals

if TYPE_CHECKING:
    from .._machine import Machine
    from .._task import Task

# include/uapi/linux/sched.h
CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND = 0x100, 0x200, 0x400, 0x800
CLONE_VFORK, CLONE_THREAD, CLONE_SETTLS = 0x4000, 0x10000, 0x80000
CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID = 0x100000, 0x200000, 0x1000000
_THREAD_NEEDS = CLONE_VM | CLONE_SIGHAND | CLONE_THREAD
# include/uapi/linux/futex.h
FUTEX_WAIT, FUTEX_WAKE, FUTEX_REQUEUE, FUTEX_CMP_REQUEUE = 0, 1, 3, 4
FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET = 9, 10
FUTEX_PRIVATE_FLAG, FUTEX_CLOCK_REALTIME = 128, 256
_FUTEX_CMD_MASK = ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
_U32 = struct.Struct("<I")
_TIMESPEC = struct.Struct("<qq")
_NS = 1_000_000_000
TIMER_ABSTIME = 1
_HOST_CLOCKS = (time.CLOCK_REALTIME, time.CLOCK_MONOTONIC, time.CLOCK_BOOTTIME)


def _sched(k: Kernel) -> Scheduler:
    sched = k.m.sched
    if sched is None:
        # A call() into the program's functions, outside run(): one thread, no scheduler.
        raise KernelError(errno.EAGAIN)
    return sched


# --- clone ------------------------------------------------------------------------------------
# (clone without CLONE_THREAD, fork and vfork make processes: ._sys_process)
@syscall("clone3")
def sys_clone3(k: Kernel) -> int:
    """glibc and musl fall back to ``clone`` on ``ENOSYS``."""
    raise KernelError(errno.ENOSYS)


def child_context(m: Machine, flags: int, newsp: int, tls: int) -> Any:
    """The registers a new thread or process starts with: the caller's as its
    ``syscall`` returns (entry_SYSCALL_64's return path: rcx = return address,
    r11 = flags) with rax 0, on ``newsp`` if given, with ``tls`` as FS base for
    ``CLONE_SETTLS``."""
    ctx = m._uc.context_save()
    after = m.cpu.gpr[RIP] + 2
    values = {UC_X86_REG_RIP: after, UC_X86_REG_RAX: 0, UC_X86_REG_RCX: after,
              UC_X86_REG_R11: m.cpu.eflags}
    if newsp:
        values[UC_X86_REG_RSP] = newsp
    if flags & CLONE_SETTLS:
        values[UC_X86_REG_FS_BASE] = tls
    for reg, value in values.items():
        ctx.reg_write(reg, value)
    return ctx


def child_task_setup(k: Kernel, child: Kernel, task: Task, parent: Task, flags: int, ptid: int,
                     ctid: int) -> None:
    """What ``copy_process`` does for a new thread or process once it has its
    registers: the parent's signal mask, and the tid writes the flags ask for
    (``CLONE_CHILD_SETTID`` into the child's memory: ``child``, the new process's
    kernel, or ``k`` itself for a thread)."""
    task.signal = ThreadSignals(mask=thread_signals(parent).mask)
    if flags & CLONE_PARENT_SETTID:
        k.write(ptid, _U32.pack(task.tid))
    if flags & CLONE_CHILD_SETTID:
        child.write(ctid, _U32.pack(task.tid))
    if flags & CLONE_CHILD_CLEARTID:
        task.clear_child_tid = ctid


def new_thread(k: Kernel, flags: int, newsp: int, ptid: int, ctid: int, tls: int) -> int:
    """``clone`` of a thread (``CLONE_VM|CLONE_SIGHAND|CLONE_THREAD``)."""
    if flags & _THREAD_NEEDS != _THREAD_NEEDS or flags & CLONE_VFORK:
        raise KernelError(errno.EINVAL)
    sched = _sched(k)
    m = k.m
    stack = m.mem.region_at(newsp - 1) if newsp else None
    task = m.add_task(stack if stack is not None else m.current_task.stack)
    task.comm = m.current_task.comm
    task.process = k
    task.pid = k.pid
    task.context = child_context(m, flags, newsp, tls)
    child_task_setup(k, k, task, m.current_task, flags, ptid, ctid)
    k.threads.append(task)
    if sched.tasks is not k.threads:
        sched.add(task)
    if not sched.sliced:
        sched.yield_now()        # from now on the threads are sliced: a new slice
    return task.tid


# --- exit ---------------------------------------------------------------------------------------
@syscall("exit")
def sys_exit(k: Kernel, status: int) -> int:
    """One thread ends; the last one ends the process with its status."""
    m = k.m
    task = m.current_task
    sched = m.sched
    if sched is None or task not in k.threads:
        k.exit(status & 0xFF)
        return 0
    _clear_child_tid(k, sched, task)
    live = [t for t in k.threads if not t.done and t is not task]
    if not live:
        k.exit(status & 0xFF)
        return 0
    k.futexes.forget(task)
    sched.finish(task, status & 0xFF)
    sched.end_slice_now()
    return 0


@syscall("exit_group")
def sys_exit_group(k: Kernel, status: int) -> int:
    k.exit(status & 0xFF)
    return 0


def _clear_child_tid(k: Kernel, sched: Scheduler, task: object) -> None:
    addr = getattr(task, "clear_child_tid", 0)
    if addr:
        try:
            k.write(addr, _U32.pack(0))
        except KernelError:
            return
        k.futexes.wake(sched, addr, 1)


@syscall("set_tid_address")
def sys_set_tid_address(k: Kernel, tidptr: int) -> int:
    task = k.m.current_task
    task.clear_child_tid = tidptr
    return task.tid


@syscall("set_robust_list")
def sys_set_robust_list(k: Kernel, head: int, length: int) -> int:
    """Recorded nowhere: a thread that dies holding a robust mutex is not emulated."""
    if length != 24:            # sizeof(struct robust_list_head)
        raise KernelError(errno.EINVAL)
    return 0


@syscall("gettid")
def sys_gettid(k: Kernel) -> int:
    return k.m.current_task.tid


@syscall("sched_yield")
def sys_sched_yield(k: Kernel) -> int:
    sched = k.m.sched
    if sched is not None and sched.sliced:
        sched.yield_now()
    return 0


# --- sleeping ----------------------------------------------------------------------------------
@syscall("nanosleep")
def sys_nanosleep(k: Kernel, req: int, rem: int) -> int:
    return _sleep(k, req)


@syscall("clock_nanosleep")
def sys_clock_nanosleep(k: Kernel, clock: int, flags: int, req: int, rem: int) -> int:
    if flags & TIMER_ABSTIME:
        sec, nsec = _read_timespec(k, req)
        now = time.clock_gettime_ns(s32(clock)) if s32(clock) in _HOST_CLOCKS else 0
        return _sleep_ns(k, max(0, sec * _NS + nsec - now))
    return _sleep(k, req)


def _sleep(k: Kernel, req: int) -> int:
    sec, nsec = _read_timespec(k, req)
    return _sleep_ns(k, sec * _NS + nsec)


def _sleep_ns(k: Kernel, ns: int) -> int:
    """Sleeping costs the host nothing: the virtual clock moves on. With other
    threads live, or a timer armed, the sleeper waits for it (they run meanwhile;
    a signal interrupts it: ``-EINTR``); alone, the clock jumps."""
    m = k.m
    sched = m.sched
    if sched is not None and (sched.sliced or k.signals.next_deadline() is not None) and ns:
        sched.block(m.current_task, "sleep", m.clock + ns)
    else:
        m.clock += ns
    return 0


def _read_timespec(k: Kernel, addr: int) -> tuple[int, int]:
    sec, nsec = _TIMESPEC.unpack(k.read(addr, _TIMESPEC.size))
    if sec < 0 or not 0 <= nsec < _NS:
        raise KernelError(errno.EINVAL)
    return sec, nsec


# --- futex -------------------------------------------------------------------------------------
@syscall("futex")
def sys_futex(k: Kernel, uaddr: int, op: int, val: int, timeout: int, uaddr2: int, val3: int) -> int:
    cmd = s32(op) & _FUTEX_CMD_MASK
    if uaddr % 4:
        raise KernelError(errno.EINVAL)
    if cmd in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
        bitset = FUTEX_BITSET_MATCH_ANY if cmd == FUTEX_WAIT else val3 & 0xFFFF_FFFF
        return _wait(k, uaddr, val, timeout, bitset, absolute=cmd == FUTEX_WAIT_BITSET,
                     realtime=bool(op & FUTEX_CLOCK_REALTIME))
    if cmd in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
        bitset = FUTEX_BITSET_MATCH_ANY if cmd == FUTEX_WAKE else val3 & 0xFFFF_FFFF
        if not bitset:
            raise KernelError(errno.EINVAL)
        sched = k.m.sched
        return 0 if sched is None else k.futexes.wake(sched, uaddr, s32(val), bitset)
    if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        if cmd == FUTEX_CMP_REQUEUE and _load(k, uaddr) != val3 & 0xFFFF_FFFF:
            raise KernelError(errno.EAGAIN)
        sched = k.m.sched
        # val2 (the requeue limit) travels in the timeout register.
        return 0 if sched is None else k.futexes.requeue(sched, uaddr, s32(val), uaddr2,
                                                         s32(timeout & 0xFFFF_FFFF))
    raise KernelError(errno.ENOSYS)


def _load(k: Kernel, uaddr: int) -> int:
    return int(_U32.unpack(k.read(uaddr, 4))[0])


def _wait(k: Kernel, uaddr: int, val: int, timeout: int, bitset: int, *, absolute: bool,
          realtime: bool) -> int:
    if not bitset:
        raise KernelError(errno.EINVAL)
    if _load(k, uaddr) != val & 0xFFFF_FFFF:
        raise KernelError(errno.EAGAIN)
    m = k.m
    deadline = _deadline(k, timeout, absolute, realtime) if timeout else None
    sched = m.sched
    alone = not [t for t in k.threads if not t.done and t is not m.current_task]
    if sched is None or (alone and k.signals.next_deadline() is None):
        if deadline is not None:
            m.clock = max(m.clock, deadline)        # nothing else can happen meanwhile
            raise KernelError(errno.ETIMEDOUT)
        if sched is None:
            # Nobody can ever wake this wait: report it as the deadlock it is.
            rip = m.cpu.gpr[RIP]
            m.abort(GuestFault(f"deadlock: the only thread waits on futex {uaddr:#x} at "
                               f"{m.symbolize(rip)} ({rip:#x})", rip=rip, reason="deadlock"))
            return 0
    k.futexes.wait(sched, m.current_task, uaddr, bitset, deadline)
    return 0


def _deadline(k: Kernel, timeout: int, absolute: bool, realtime: bool) -> int:
    """A futex timeout as a point of the virtual clock (ns). A relative timeout is
    virtual time; an absolute one is measured from the clock the guest reads
    (``clock_gettime``: the host's), so it waits as long as the guest meant."""
    sec, nsec = _read_timespec(k, timeout)
    ns = sec * _NS + nsec
    if absolute:
        now = time.clock_gettime_ns(time.CLOCK_REALTIME if realtime else time.CLOCK_MONOTONIC)
        ns = max(0, ns - now)
    return k.m.clock + ns
