"""Signals of one guest process: actions, per-thread masks and queues, delivery.

Modelled on Linux's kernel/signal.c (``send_signal``, ``complete_signal``,
``dequeue_signal``, ``get_signal``, ``force_sig_fault``) and
arch/x86/kernel/signal.c (``handle_signal``, ``setup_rt_frame``,
``rt_sigreturn``), and on gVisor's pkg/sentry/kernel/task_signals.go.

Rules kept:
- Actions are per process, masks and thread-directed queues per thread, and a
  process-directed signal waits in the shared queue; the main thread gets it
  first, else a thread that does not block it (``complete_signal``).
- A standard signal (< ``SIGRTMIN``) is pending at most once per queue; a real-time
  one queues every instance. An ignored signal is discarded when sent, unless blocked.
- Delivery happens on the way back to user mode: in the scheduler, before a task
  resumes a slice (:meth:`ProcessSignals.before_resume`). Synchronous signals
  (faults) go first, then the lowest number. Each handled signal gets a frame
  (:mod:`._sigframe`) and the handler's ``sa_mask`` (plus itself unless
  ``SA_NODEFER``); ``SA_RESETHAND`` restores the default action.
- ``rt_sigreturn`` restores the registers the frame holds (a handler may change
  them) over the engine context saved at delivery (FPU/SSE state included).
- A fault (:class:`~emu.GuestFault`) becomes a synchronous signal when the process
  handles it and does not block it; otherwise the run ends with the fault, as before.
- Time is the run's virtual clock: ``ITIMER_REAL`` expires at a deadline the
  scheduler keeps (counted slices end there; a run where every task waits jumps
  there).

Simplified: an interrupted blocking call (futex wait, sleeps, ``pause``) returns
``-EINTR`` whatever ``SA_RESTART`` says (glibc retries futex waits itself); stop
signals terminate; there is no core file.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._regtable import MASK64, RAX, RDI, RDX, RIP, RSI, RSP
from ._sigframe import (
    FPSTATE_SIZE,
    FRAME_SIZE,
    GREGS,
    INFO_OFFSET,
    REDZONE,
    UC_OFFSET,
    fxsave_image,
    pack_frame,
    unpack_ucontext,
)

if TYPE_CHECKING:
    from .._errors import GuestFault
    from .._task import Task
    from ._kernel import Kernel

__all__ = ["ProcessSignals", "ThreadSignals", "SigAction", "siginfo", "sigbit"]

# include/uapi/asm-generic/signal.h, x86-64 numbers
SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE = 1, 2, 3, 4, 5, 6, 7, 8
SIGKILL, SIGUSR1, SIGSEGV, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM = 9, 10, 11, 12, 13, 14, 15
SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG = 17, 18, 19, 20, 21, 22, 23
SIGXCPU, SIGXFSZ, SIGWINCH, SIGSYS = 24, 25, 28, 31
SIGRTMIN = 32
NSIG = 64
SIG_DFL, SIG_IGN = 0, 1
SA_SIGINFO, SA_RESTORER, SA_ONSTACK = 0x4, 0x04000000, 0x08000000
SA_RESTART, SA_NODEFER, SA_RESETHAND = 0x10000000, 0x40000000, 0x80000000
SS_ONSTACK, SS_DISABLE, SS_AUTODISARM = 1, 2, 1 << 31
MINSIGSTKSZ = 2048
# si_code values (include/uapi/asm-generic/siginfo.h)
SI_USER, SI_KERNEL, SI_TKILL = 0, 0x80, -6
SEGV_MAPERR, SEGV_ACCERR, BUS_ADRALN, ILL_ILLOPN, FPE_INTDIV, TRAP_BRKPT = 1, 2, 1, 2, 1, 1


def sigbit(sig: int) -> int:
    return 1 << (sig - 1)


_UNBLOCKABLE = sigbit(SIGKILL) | sigbit(SIGSTOP)
_DEFAULT_IGNORED = frozenset({SIGCHLD, SIGCONT, SIGURG, SIGWINCH})
# Delivered before the others (kernel/signal.c: SYNCHRONOUS_MASK).
_SYNCHRONOUS = (SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE, SIGSYS)
_ABI_EFLAGS_CLEAR = (1 << 8) | (1 << 10) | (1 << 16)         # TF, DF, RF at handler entry
# eflags bits rt_sigreturn takes from the frame (arch/x86: FIX_EFLAGS)
_FIX_EFLAGS = 0x40DD5 | (1 << 16)
_MAX_SAVED_FRAMES = 256
_KERNEL_SIGACTION = struct.Struct("<QQQQ")        # handler, flags, restorer, mask
# A fault's reason -> (signal, si_code); the address comes with it.
_FAULT_SIGNAL = {
    "unmapped": (SIGSEGV, SEGV_MAPERR), "protection": (SIGSEGV, SEGV_ACCERR),
    "invalid-instruction": (SIGILL, ILL_ILLOPN), "exception": (SIGSEGV, SI_KERNEL),
}


@dataclass(frozen=True)
class SigAction:
    """``struct kernel_sigaction`` as ``rt_sigaction`` takes it."""

    handler: int = SIG_DFL
    flags: int = 0
    restorer: int = 0
    mask: int = 0

    @classmethod
    def unpack(cls, data: bytes) -> SigAction:
        return cls(*_KERNEL_SIGACTION.unpack(data))

    def pack(self) -> bytes:
        return _KERNEL_SIGACTION.pack(self.handler, self.flags, self.restorer, self.mask)


def siginfo(sig: int, code: int, *, pid: int = 0, uid: int = 0, addr: int | None = None) -> bytes:
    """A ``siginfo_t``: signo, errno, code, then the kill (pid, uid) or fault (addr) fields."""
    head = struct.pack("<iii4x", sig, 0, code)
    body = struct.pack("<Q", addr & MASK64) if addr is not None else struct.pack("<iI", pid, uid)
    return head + body


@dataclass(eq=False)
class ThreadSignals:
    """One thread's signal state (``task_struct``: blocked, pending, sas_ss_*)."""

    mask: int = 0
    pending: dict[int, list[bytes]] = field(default_factory=dict)
    saved_mask: int | None = None          # sigsuspend's mask to put back (restore_sigmask)
    altstack: tuple[int, int, int] = (0, 0, SS_DISABLE)     # ss_sp, ss_size, flags
    # Engine contexts saved at delivery, by frame address (newest last): rt_sigreturn
    # puts one back; frames a handler left by siglongjmp are dropped when found dead.
    frames: list[tuple[int, Any]] = field(default_factory=list)
    sigreturn: bytes | None = None         # the ucontext rt_sigreturn read, applied at resume
    sigreturn_frame: int = 0

    def on_altstack(self, sp: int) -> bool:
        ss_sp, ss_size, flags = self.altstack
        return not flags & SS_DISABLE and ss_sp < sp <= ss_sp + ss_size

    def altstack_flags(self, sp: int) -> int:
        if self.altstack[2] & SS_DISABLE:
            return SS_DISABLE
        return SS_ONSTACK if self.on_altstack(sp) else 0


def thread_signals(task: Task) -> ThreadSignals:
    state = task.signal
    if state is None:
        state = task.signal = ThreadSignals()
    return state


def _queue(pending: dict[int, list[bytes]], sig: int, info: bytes) -> None:
    queue = pending.setdefault(sig, [])
    if sig < SIGRTMIN and queue:
        return                          # a standard signal is pending once
    queue.append(info)


def _take(pending: dict[int, list[bytes]], allowed: int) -> tuple[int, bytes] | None:
    ready = [s for s, q in pending.items() if q and allowed & sigbit(s)]
    if not ready:
        return None
    sync = [s for s in _SYNCHRONOUS if s in ready]
    sig = sync[0] if sync else min(ready)
    info = pending[sig].pop(0)
    if not pending[sig]:
        del pending[sig]
    return sig, info


def _bits(pending: dict[int, list[bytes]]) -> int:
    out = 0
    for sig, queue in pending.items():
        if queue:
            out |= sigbit(sig)
    return out


class ProcessSignals:
    """The process's side: actions, the shared queue, ``ITIMER_REAL``; and the
    scheduler's signal hooks (:class:`emu._sched.SignalHooks`)."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.actions: dict[int, SigAction] = {}
        self.shared: dict[int, list[bytes]] = {}
        self.timer_deadline: int | None = None       # virtual ns
        self.timer_interval = 0

    # --- actions -----------------------------------------------------------------------
    def action(self, sig: int) -> SigAction:
        return self.actions.get(sig, SigAction())

    def set_action(self, sig: int, act: SigAction) -> None:
        self.actions[sig] = act
        if self.ignored(sig):               # kernel/signal.c do_sigaction: flush pending
            self.shared.pop(sig, None)
            for task in self.k.threads:
                thread_signals(task).pending.pop(sig, None)

    def ignored(self, sig: int) -> bool:
        handler = self.action(sig).handler
        return handler == SIG_IGN or (handler == SIG_DFL and sig in _DEFAULT_IGNORED)

    # --- sending -------------------------------------------------------------------------
    def send(self, sig: int, info: bytes, target: Task | None = None) -> None:
        """Queue ``sig`` for the process (``target`` None) or for one thread, and wake
        the thread that will take it if it waits (its call returns ``-EINTR``)."""
        threads = [t for t in self.k.threads if not t.done]
        if not threads:
            return
        bit = sigbit(sig)
        if target is None:
            waker = next((t for t in threads if not thread_signals(t).mask & bit), threads[0])
            if self.ignored(sig) and not thread_signals(waker).mask & bit:
                return
            _queue(self.shared, sig, info)
        else:
            waker = target
            if self.ignored(sig) and not thread_signals(target).mask & bit:
                return
            _queue(thread_signals(target).pending, sig, info)
        if not thread_signals(waker).mask & bit:
            self._interrupt(waker)

    def _interrupt(self, task: Task) -> None:
        sched = self.k.m.sched
        if sched is not None and task.state == "blocked":
            self.k.futexes.forget(task)
            sched.wake(task, -errno.EINTR)

    def deliverable(self, task: Task) -> int:
        """The signals ``task`` would take now (pending and not blocked)."""
        ts = thread_signals(task)
        return (_bits(ts.pending) | _bits(self.shared)) & ~ts.mask & MASK64

    def pending(self, task: Task) -> int:
        return _bits(thread_signals(task).pending) | _bits(self.shared)

    def recheck(self) -> None:
        """From a syscall: when the calling thread now has a signal to take, its
        slice ends so that the scheduler delivers it before the next instruction."""
        m = self.k.m
        sched = m.sched
        if sched is not None and self.deliverable(m.current_task):
            sched.end_slice_now()

    # --- the scheduler's hooks ------------------------------------------------------------
    def next_deadline(self) -> int | None:
        return self.timer_deadline

    def expire(self, now: int) -> None:
        """``ITIMER_REAL`` ran out: SIGALRM to the process (kernel/time/itimer.c)."""
        deadline = self.timer_deadline
        if deadline is None or deadline > now:
            return
        if self.timer_interval:
            self.timer_deadline = deadline + self.timer_interval * max(
                1, (now - deadline) // self.timer_interval + 1)
        else:
            self.timer_deadline = None
        self.send(SIGALRM, siginfo(SIGALRM, SI_KERNEL))

    def on_fault(self, task: Task, fault: GuestFault) -> bool:
        """A fault of ``task`` (on the CPU): True when it becomes a signal its
        handler will take (``force_sig_fault``), False when it ends the run."""
        m = self.k.m
        if m.preempt_count:             # a probe's single-step in flight: not resumable
            return False
        what = self._fault_signal(fault)
        if what is None:
            return False
        sig, code, addr = what
        act = self.action(sig)
        if act.handler in (SIG_DFL, SIG_IGN) or thread_signals(task).mask & sigbit(sig):
            return False                # the default action: the run ends with the fault
        _queue(thread_signals(task).pending, sig, siginfo(sig, code, addr=addr))
        return True

    def end_of_fault(self, task: Task, fault: GuestFault) -> bool:
        """A fault no handler takes ends a child process with its signal (its
        parent sees ``WIFSIGNALED``); the run's first process ends the run."""
        if self.k.parent is None:
            return False
        what = self._fault_signal(fault)
        sig = what[0] if what is not None else SIGSEGV
        self.k.report(f"process {self.k.pid} ({task.comm}) killed by signal {sig}: {fault}")
        self.k.exit(128 + sig, sig)
        return True

    def _fault_signal(self, fault: GuestFault) -> tuple[int, int, int | None] | None:
        """The signal, code and address a fault raises (``force_sig_fault``), or None."""
        m = self.k.m
        addr, intno = m.last_fault
        if fault.reason == "trap":
            sig, code = (SIGTRAP, SI_KERNEL) if intno in (None, 3) else \
                (SIGFPE, FPE_INTDIV) if intno == 0 else (SIGSEGV, SI_KERNEL)
            addr = m.cpu.gpr[RIP] if intno == 0 else 0
        elif fault.reason in _FAULT_SIGNAL:
            sig, code = _FAULT_SIGNAL[fault.reason]
            if "unaligned" in str(fault):
                sig, code = SIGBUS, BUS_ADRALN
            if sig == SIGILL:
                addr = m.cpu.gpr[RIP]
            elif addr is None or (addr >> 47) not in (0, 0x1FFFF):
                code, addr = SI_KERNEL, 0     # #GP (non-canonical), hlt: no address
        else:
            return None
        return sig, code, addr

    def before_resume(self, task: Task) -> None:
        """``task`` is on the CPU, about to run: finish its rt_sigreturn, then set up
        a frame for each signal it takes (the last set up runs first)."""
        ts = thread_signals(task)
        if ts.sigreturn is not None:
            self._restore(task, ts)
        delivered = False
        while True:
            taken = _take(ts.pending, ~ts.mask) or _take(self.shared, ~ts.mask)
            if taken is None:
                break
            sig, info = taken
            act = self.action(sig)
            if self.ignored(sig):
                continue
            if act.handler == SIG_DFL:
                self.k.exit(128 + sig, sig)          # terminate, core or stop: the process ends
                return
            if not self._handle(task, ts, sig, act, info):
                return
            delivered = True
        if not delivered and ts.saved_mask is not None:
            ts.mask, ts.saved_mask = ts.saved_mask, None

    # --- frames ---------------------------------------------------------------------------
    def _handle(self, task: Task, ts: ThreadSignals, sig: int, act: SigAction, info: bytes) -> bool:
        """Set up the frame of ``sig`` (``handle_signal``); False when the stack
        cannot take it (the process dies of SIGSEGV, as ``force_sigsegv``)."""
        m = self.k.m
        gpr = m.cpu.gpr
        sp = gpr[RSP]
        old_mask = ts.saved_mask if ts.saved_mask is not None else ts.mask
        ts.saved_mask = None
        ss_sp, ss_size, ss_flags = ts.altstack
        altstack = (ss_sp, ts.altstack_flags(sp), ss_size)
        if act.flags & SA_ONSTACK and not ss_flags & SS_DISABLE and not ts.on_altstack(sp):
            sp = ss_sp + ss_size
            if ss_flags & SS_AUTODISARM:
                ts.altstack = (0, 0, SS_DISABLE)
        else:
            sp -= REDZONE
        fpstate = (sp - FPSTATE_SIZE) & ~63
        frame = ((fpstate - FRAME_SIZE) & ~15) - 8
        data = pack_frame(restorer=act.restorer, gregs=[gpr[r] for r in GREGS], rip=gpr[RIP],
                          eflags=m.cpu.eflags, sigmask=old_mask, altstack=altstack,
                          info=info, fpstate=fpstate)
        try:
            self.k.write(fpstate, fxsave_image(m._uc))
            self.k.write(frame, data)
        except Exception:
            self.k.report(f"signal {sig}: the stack at {sp:#x} cannot hold a signal frame; "
                          f"the process dies of SIGSEGV")
            self.k.exit(128 + SIGSEGV, SIGSEGV)
            return False
        self._save_context(ts, frame)
        gpr[RDI], gpr[RSI], gpr[RDX], gpr[RAX] = sig, frame + INFO_OFFSET, frame + UC_OFFSET, 0
        gpr[RSP], gpr[RIP] = frame, act.handler
        m.cpu.eflags = m.cpu.eflags & ~_ABI_EFLAGS_CLEAR
        ts.mask = (ts.mask | act.mask | (0 if act.flags & SA_NODEFER else sigbit(sig))) \
            & ~_UNBLOCKABLE & MASK64
        if act.flags & SA_RESETHAND:
            self.actions[sig] = SigAction()
        return True

    def _save_context(self, ts: ThreadSignals, frame: int) -> None:
        # Frames below the new one on its stack were left (siglongjmp): they are dead.
        region = self.k.mem.region_at(frame)
        ts.frames = [(f, c) for f, c in ts.frames
                     if not (f < frame and self.k.mem.region_at(f) is region)]
        ts.frames.append((frame, self.k.m._uc.context_save()))
        del ts.frames[:-_MAX_SAVED_FRAMES]

    def sigreturn(self, task: Task) -> None:
        """``rt_sigreturn`` (from its syscall hook): read the frame below RSP; the
        registers are put back when the task resumes (:meth:`before_resume`)."""
        ts = thread_signals(task)
        frame = self.k.m.cpu.gpr[RSP] - 8
        ts.sigreturn = self.k.read(frame + UC_OFFSET, INFO_OFFSET - UC_OFFSET)
        ts.sigreturn_frame = frame
        sched = self.k.m.sched
        if sched is not None:
            sched.end_slice_now()

    def _restore(self, task: Task, ts: ThreadSignals) -> None:
        m = self.k.m
        data, frame = ts.sigreturn, ts.sigreturn_frame
        ts.sigreturn = None
        assert data is not None
        gregs, rip, eflags, mask = unpack_ucontext(data)
        for i, (f, ctx) in enumerate(ts.frames):
            if f == frame:
                m._uc.context_restore(ctx)      # FPU/SSE, segment bases, all of it
                del ts.frames[i:]
                break
        gpr = m.cpu.gpr
        for reg, value in zip(GREGS, gregs, strict=True):
            gpr[reg] = value
        gpr[RIP] = rip
        m.cpu.eflags = (m.cpu.eflags & ~_FIX_EFLAGS) | (eflags & _FIX_EFLAGS)
        ts.mask = mask & ~_UNBLOCKABLE & MASK64
