"""Signal system calls: actions, masks, waiting, sending, the alternate stack, timers.

Handlers validate and translate; the rules live in :mod:`._signal`. From
kernel/signal.c (``do_sigaction``, ``sigprocmask``, ``do_sigaltstack``,
``sys_rt_sigsuspend``, ``do_tkill``), kernel/time/itimer.c (``alarm``,
``do_setitimer``: ``ITIMER_REAL`` only; the CPU-time timers are accepted and
never fire) and arch/x86/kernel/signal_64.c (``rt_sigreturn``).

Waiting (``pause``, ``rt_sigsuspend``) parks the thread in the scheduler until a
signal it takes arrives; when nothing could ever send one (the only thread, no
timer armed) it returns ``-EINTR`` at once instead of waiting forever.
"""

from __future__ import annotations

import errno
import struct

from .._regtable import MASK64
from .._task import Task
from ._kernel import Kernel
from ._registry import KernelError, s32, syscall
from ._signal import (
    MINSIGSTKSZ,
    NSIG,
    SI_TKILL,
    SI_USER,
    SIG_DFL,
    SIGKILL,
    SIGSTOP,
    SS_AUTODISARM,
    SS_DISABLE,
    SS_ONSTACK,
    SigAction,
    sigbit,
    siginfo,
    thread_signals,
)

SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
_SIGSET_SIZE = 8
_UNBLOCKABLE = sigbit(SIGKILL) | sigbit(SIGSTOP)
_STACK_T = struct.Struct("<QiiQ")          # ss_sp, ss_flags, (pad), ss_size
_ITIMERVAL = struct.Struct("<qqqq")        # it_interval, it_value (timeval: sec, usec)
ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF = 0, 1, 2
_NS, _US = 1_000_000_000, 1_000


def _signo(sig: int, *, zero: bool = False) -> int:
    sig = s32(sig)
    if not (0 if zero else 1) <= sig <= NSIG:
        raise KernelError(errno.EINVAL)
    return sig


def _read_sigset(k: Kernel, addr: int, size: int) -> int:
    if size != _SIGSET_SIZE:
        raise KernelError(errno.EINVAL)
    return int(struct.unpack("<Q", k.read(addr, 8))[0])


# --- actions and masks ------------------------------------------------------------------------
@syscall("rt_sigaction")
def sys_rt_sigaction(k: Kernel, sig: int, act: int, oldact: int, sigsetsize: int) -> int:
    sig = _signo(sig)
    if sigsetsize != _SIGSET_SIZE or (act and sig in (SIGKILL, SIGSTOP)):
        raise KernelError(errno.EINVAL)
    old = k.signals.action(sig)
    if act:
        new = SigAction.unpack(k.read(act, 32))
        k.signals.set_action(sig, SigAction(new.handler, new.flags, new.restorer,
                                            new.mask & ~_UNBLOCKABLE & MASK64))
    if oldact:
        k.write(oldact, old.pack())
    return 0


@syscall("rt_sigprocmask")
def sys_rt_sigprocmask(k: Kernel, how: int, nset: int, oset: int, sigsetsize: int) -> int:
    if sigsetsize != _SIGSET_SIZE:
        raise KernelError(errno.EINVAL)
    ts = thread_signals(k.m.current_task)
    old = ts.mask
    if nset:
        value = _read_sigset(k, nset, sigsetsize)
        how = s32(how)
        if how == SIG_BLOCK:
            mask = old | value
        elif how == SIG_UNBLOCK:
            mask = old & ~value
        elif how == SIG_SETMASK:
            mask = value
        else:
            raise KernelError(errno.EINVAL)
        ts.mask = mask & ~_UNBLOCKABLE & MASK64
    if oset:
        k.write(oset, struct.pack("<Q", old))
    k.signals.recheck()
    return 0


@syscall("rt_sigpending")
def sys_rt_sigpending(k: Kernel, uset: int, sigsetsize: int) -> int:
    if sigsetsize > _SIGSET_SIZE:
        raise KernelError(errno.EINVAL)
    task = k.m.current_task
    k.write(uset, struct.pack("<Q", k.signals.pending(task) & thread_signals(task).mask)[:sigsetsize])
    return 0


# --- waiting ------------------------------------------------------------------------------------
def _wait_for_signal(k: Kernel, what: str) -> int:
    """Park the calling thread until a signal it takes arrives; always ``-EINTR``."""
    m = k.m
    task = m.current_task
    sched = m.sched
    if k.signals.deliverable(task):
        k.signals.recheck()
        raise KernelError(errno.EINTR)
    others = [t for t in k.threads if not t.done and t is not task]
    if sched is None or (not others and k.signals.next_deadline() is None):
        ts = thread_signals(task)
        if ts.saved_mask is not None:
            ts.mask, ts.saved_mask = ts.saved_mask, None
        k.report(f"{what} with nothing that could ever send a signal returns -EINTR "
                 f"instead of waiting forever")
        raise KernelError(errno.EINTR)
    sched.block(task, what)
    task.wake_value = -errno.EINTR
    raise KernelError(errno.EINTR)


@syscall("pause")
def sys_pause(k: Kernel) -> int:
    return _wait_for_signal(k, "pause")


@syscall("rt_sigsuspend")
def sys_rt_sigsuspend(k: Kernel, unewset: int, sigsetsize: int) -> int:
    mask = _read_sigset(k, unewset, sigsetsize)
    ts = thread_signals(k.m.current_task)
    ts.saved_mask = ts.mask          # the frame's uc_sigmask; put back after the handler
    ts.mask = mask & ~_UNBLOCKABLE & MASK64
    return _wait_for_signal(k, "sigsuspend")


# --- the alternate stack and the way back ----------------------------------------------------------
@syscall("sigaltstack")
def sys_sigaltstack(k: Kernel, uss: int, uoss: int) -> int:
    ts = thread_signals(k.m.current_task)
    sp = k.cpu.gpr[4]                # RSP
    old = _STACK_T.pack(ts.altstack[0], ts.altstack_flags(sp) | (ts.altstack[2] & SS_AUTODISARM),
                        0, ts.altstack[1])
    if uss:
        ss_sp, flags, _pad, size = _STACK_T.unpack(k.read(uss, _STACK_T.size))
        if ts.on_altstack(sp):
            raise KernelError(errno.EPERM)
        mode = flags & ~SS_AUTODISARM
        if mode not in (0, SS_ONSTACK, SS_DISABLE):
            raise KernelError(errno.EINVAL)
        if mode == SS_DISABLE:
            ts.altstack = (0, 0, SS_DISABLE)
        else:
            if size < MINSIGSTKSZ:
                raise KernelError(errno.ENOMEM)
            ts.altstack = (ss_sp & MASK64, size, flags & SS_AUTODISARM)
    if uoss:
        k.write(uoss, old)
    return 0


@syscall("rt_sigreturn")
def sys_rt_sigreturn(k: Kernel) -> int:
    """The registers come back from the frame when the thread resumes (the result
    register included), so what this returns is overwritten."""
    k.signals.sigreturn(k.m.current_task)
    return 0


# --- sending ------------------------------------------------------------------------------------
def _send(k: Kernel, sig: int, code: int, target: Task | None) -> int:
    if sig == 0:
        return 0
    k.signals.send(sig, siginfo(sig, code, pid=k.pid, uid=k.uid), target)
    if k.m.sched is None:
        # No scheduler (a call() into the program): nothing delivers; the default
        # action still ends the process.
        if k.signals.action(sig).handler == SIG_DFL and not k.signals.ignored(sig):
            k.exit(128 + sig, sig)
        return 0
    k.signals.recheck()
    return 0


def _thread(k: Kernel, tid: int) -> Task:
    tid = s32(tid)
    if tid <= 0:
        raise KernelError(errno.EINVAL)
    for task in k.threads:
        if task.tid == tid and not task.done:
            return task
    raise KernelError(errno.ESRCH)


@syscall("kill")
def sys_kill(k: Kernel, pid: int, sig: int) -> int:
    """``kill_something_info``: a process, the caller's group (0), every process
    but the first and the caller (-1), or a group (-pgid); any of the run's."""
    sig = _signo(sig, zero=True)
    pid = s32(pid)
    if pid > 0:
        target = k.world.find(pid)
        if target is None:
            raise KernelError(errno.ESRCH)
        targets = [target]
    elif pid == -1:
        targets = [p for p in k.world.live() if p is not k and p.parent is not None]
    else:
        group = k.pgid if pid == 0 else -pid
        targets = [p for p in k.world.live() if p.pgid == group]
    if not targets and pid != -1:
        raise KernelError(errno.ESRCH)
    for target in targets:
        if target is k:
            _send(k, sig, SI_USER, None)
        elif sig and target.exited is None:
            target.signals.send(sig, siginfo(sig, SI_USER, pid=k.pid, uid=k.uid))
    return 0


@syscall("tgkill")
def sys_tgkill(k: Kernel, tgid: int, tid: int, sig: int) -> int:
    sig = _signo(sig, zero=True)
    if s32(tgid) <= 0:
        raise KernelError(errno.EINVAL)
    process = k.world.find(s32(tgid))
    if process is None:
        raise KernelError(errno.ESRCH)
    return _send_thread(k, process, _thread(process, tid), sig)


@syscall("tkill")
def sys_tkill(k: Kernel, tid: int, sig: int) -> int:
    sig = _signo(sig, zero=True)
    for process in [k, *k.world.live()]:
        if any(t.tid == s32(tid) and not t.done for t in process.threads):
            return _send_thread(k, process, _thread(process, tid), sig)
    raise KernelError(errno.ESRCH)


def _send_thread(k: Kernel, process: Kernel, task: Task, sig: int) -> int:
    if process is k:
        return _send(k, sig, SI_TKILL, task)
    if sig:
        process.signals.send(sig, siginfo(sig, SI_TKILL, pid=k.pid, uid=k.uid), task)
    return 0


# --- ITIMER_REAL on the virtual clock ----------------------------------------------------------
def _timeval_ns(sec: int, usec: int) -> int:
    if sec < 0 or not 0 <= usec < 1_000_000:
        raise KernelError(errno.EINVAL)
    return sec * _NS + usec * _US


def _timer_value(k: Kernel) -> tuple[int, int]:
    """(interval, time left) of ITIMER_REAL, in ns."""
    deadline = k.signals.timer_deadline
    left = 0 if deadline is None else max(1, deadline - k.m.now())
    return k.signals.timer_interval, left


def _pack_itimerval(interval: int, value: int) -> bytes:
    return _ITIMERVAL.pack(interval // _NS, interval % _NS // _US, value // _NS,
                           -(-(value % _NS) // _US) if value % _NS else 0)


def _arm(k: Kernel, interval: int, value: int) -> None:
    k.signals.timer_interval = interval
    k.signals.timer_deadline = k.m.now() + value if value else None
    sched = k.m.sched
    if sched is not None:
        sched.end_slice_now()        # the next slice is bounded by the new deadline


@syscall("setitimer")
def sys_setitimer(k: Kernel, which: int, new: int, old: int) -> int:
    which = s32(which)
    if which not in (ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF):
        raise KernelError(errno.EINVAL)
    values = _ITIMERVAL.unpack(k.read(new, _ITIMERVAL.size)) if new else (0, 0, 0, 0)
    interval, value = _timeval_ns(*values[:2]), _timeval_ns(*values[2:])
    if which != ITIMER_REAL:         # CPU-time timers: accepted, never fire
        if old:
            k.write(old, bytes(_ITIMERVAL.size))
        return 0
    if old:
        k.write(old, _pack_itimerval(*_timer_value(k)))
    _arm(k, interval, value)
    return 0


@syscall("getitimer")
def sys_getitimer(k: Kernel, which: int, cur: int) -> int:
    which = s32(which)
    if which not in (ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF):
        raise KernelError(errno.EINVAL)
    k.write(cur, _pack_itimerval(*_timer_value(k)) if which == ITIMER_REAL
            else bytes(_ITIMERVAL.size))
    return 0


@syscall("alarm")
def sys_alarm(k: Kernel, seconds: int) -> int:
    _interval, left = _timer_value(k)
    seconds &= 0xFFFF_FFFF
    _arm(k, 0, seconds * _NS)
    sec, usec = divmod(left // _US, 1_000_000)
    return sec + (1 if (not sec and usec) or usec >= 500_000 else 0)
