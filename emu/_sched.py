"""The seeded preemptive scheduler: every task of a run on one virtual CPU.

A run's tasks are the spawned tasks of a machine, or the threads of every
process of a program (emu.linux): each process has its own machine (address
space and engine) and a task runs on its own (``task.machine``); the run's one
clock lives in the first machine and is copied into another around its slices.

One runner owns every scheduling decision (trio's ``_run.py``, rr's chaos mode):
which task runs next and for how long both come from one ``random.Random(seed)``,
so a program, its probes and a seed give one interleaving, replayable on any
machine. Time is virtual: :attr:`Machine.clock` counts the instructions
retired in counted slices (nanoseconds for futex timeouts and sleeps; every
slice is counted when several tasks are live or ``m.exact_clock`` is set), and
jumps to the next deadline when every task waits.

Invariants:
- ``m.current_task`` is the task whose registers are in the engine while a slice
  runs; between slices every unfinished task's registers are in ``task.context``.
- A slice ends when its instruction count runs out, at a ``pause``, at a probe
  hit the scheduler picked (:meth:`Machine.preempt_point`), or when the task
  blocks, yields or ends. It never ends with ``m.preempt_count`` non-zero (a
  probe's single-step in flight): the same task then gets another slice.
- With one live task there is nothing to interleave: it runs uncounted (full
  speed) unless an instruction budget needs counting.
- A blocked task leaves the CPU through ``emu_stop`` from a syscall hook (RIP is
  then past the ``syscall``); ``task.wake_value`` is its syscall's result.
- Signals (:class:`SignalHooks`, a process's): a task takes its signals on the CPU
  right before a slice (after its syscall's result is in RAX), as Linux does on
  the way back to user mode; a fault its process handles becomes a signal instead
  of ending the run (the task does not end); a timer deadline bounds every slice
  (counted then) and is a deadline like a sleeper's when every task waits.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Protocol

from unicorn.x86_const import UC_X86_REG_RIP

from ._engine import UNLIMITED
from ._errors import GuestFault
from ._interrupt import check_max_insns, check_timeout, check_timeslice, unwatch, watch_also
from ._regtable import RAX, RIP, to_signed64
from ._task import BLOCKED, DONE, RUNNABLE, Task

if TYPE_CHECKING:
    from ._machine import Machine

__all__ = ["Scheduler", "SignalHooks"]


class SignalHooks(Protocol):
    """What the scheduler asks of a process's signals (``emu.linux``)."""

    def before_resume(self, task: Task) -> None:
        """``task`` is on the CPU and about to run: deliver its signals (may end
        the process through ``Machine.abort``)."""

    def on_fault(self, task: Task, fault: GuestFault) -> bool:
        """``task`` (on the CPU) faulted: True when a handler will take it."""

    def next_deadline(self) -> int | None:
        """The virtual time (ns) of the next timer expiry, or None."""

    def end_of_fault(self, task: Task, fault: GuestFault) -> bool:
        """A fault no handler takes: True when it ended ``task``'s process only (a
        child process dies of the signal), False when it ends the run."""

    def expire(self, now: int) -> None:
        """Fire the timers due at ``now``."""

# With other tasks live, a slice also ends at its N-th probe hit, N drawn from
# [1, HIT_SLICE]: switches land inside probed code, where return probes go wrong,
# but rarely enough that a hit costs about what it costs alone (make bench).
HIT_SLICE = 128
# Slices given to a task that must not be preempted yet (a single-step in flight).
_FINISH_STEP_SLICE = 16


class Scheduler:
    """One run of a set of tasks (``Machine.run_tasks`` or a process's threads).

    Args:
        m: the machine.
        tasks: the tasks to run to their end; more may join (:meth:`add`).
        seed: seeds every choice.
        timeslice: slices last ``randint(1, timeslice)`` instructions.
        max_insns: instruction budget of the whole run, or None.
        timeout: wall-clock limit of the whole run in seconds, or None.
        process: the tasks are the threads of a loaded program: a fault ends the
            whole process (raised), and returning into the exit page is a fault.
        signals: the process's signal hooks, or None (no signals).
    """

    def __init__(self, m: Machine, tasks: list[Task], *, seed: int, timeslice: int,
                 max_insns: int | None, timeout: float | None, process: bool = False,
                 signals: SignalHooks | None = None) -> None:
        self.m = m
        self.signals = signals
        self.tasks = tasks
        self.rng = random.Random(seed)
        self.timeslice = check_timeslice(timeslice)
        self.max_insns = check_max_insns(max_insns)
        self.timeout = check_timeout(timeout)
        self.process = process
        self.running: Machine = m     # the machine whose engine runs (processes: each its own)
        self.retired = 0              # instructions of this run (the budget's measure)
        self.sliced = False           # several tasks live: counted slices, preemption on
        self.switches = 0
        self._started = 0.0
        self._ended_by_us = False     # the slice was ended on purpose (not hlt)

    # --- tasks joining and leaving -----------------------------------------------------
    def add(self, task: Task) -> None:
        """A task created during the run (a guest ``clone``) joins it."""
        self.tasks.append(task)

    def block(self, task: Task, what: str, deadline: int | None = None) -> None:
        """Park the running ``task`` (from a syscall hook) until :meth:`wake`."""
        task.state = BLOCKED
        task.blocked_on = what
        task.deadline = deadline
        self.end_slice_now()

    def wake(self, task: Task, value: int) -> None:
        """Make a blocked task runnable; its blocking syscall returns ``value``."""
        if task.state != BLOCKED:
            return
        task.state = RUNNABLE
        task.blocked_on = ""
        task.deadline = None
        task.on_timeout = None
        task.wake_value = value

    def yield_now(self) -> None:
        """End the running task's slice (``sched_yield``)."""
        self.end_slice_now()

    def end_slice_now(self) -> None:
        """Stop the engine from a syscall or interrupt hook (RIP already advanced)."""
        self._ended_by_us = True
        self.running._uc.emu_stop()

    def finish(self, task: Task, result: int | None) -> None:
        """End ``task``: every client hears of it (``Machine.on_task_exit``)."""
        if task.state == DONE:
            return
        task.state = DONE
        task.result = result
        task.context = None
        for fn in list(self.machine_of(task).on_task_exit):
            fn(task)

    def machine_of(self, task: Task) -> Machine:
        """The machine (address space) ``task`` runs in."""
        m = task.machine
        return self.m if m is None else m

    def _signals_of(self, task: Task) -> SignalHooks | None:
        if self.signals is None:
            return None
        process = task.process
        return self.signals if process is None else process.signals

    def _all_signals(self) -> list[SignalHooks]:
        if self.signals is None:
            return []
        seen: dict[int, SignalHooks] = {id(self.signals): self.signals}
        for t in self.tasks:
            if t.process is not None and t.state != DONE:
                seen.setdefault(id(t.process.signals), t.process.signals)
        return list(seen.values())

    def _next_timer(self) -> int | None:
        deadlines = [d for hooks in self._all_signals() if (d := hooks.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    # --- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Run until every task is done.

        Raises:
            GuestFault: a deadlock, the budget or the timeout (naming the task);
                in process mode, a fault of any thread.
            KeyboardInterrupt: Ctrl-C; every task is where a resumed run continues.
            BaseException: what a handler raised (the run stops there).
        """
        self._started = time.monotonic()
        while True:
            live = [t for t in self.tasks if t.state != DONE]
            if not live:
                return
            runnable = [t for t in live if t.state == RUNNABLE]
            if not runnable:
                self._expire(live)
                continue
            self.sliced = len(live) > 1
            task = runnable[0] if len(runnable) == 1 else self.rng.choice(runnable)
            count = self.rng.randint(1, self.timeslice) if self.sliced else 0
            if not count and self.m.exact_clock:
                count = UNLIMITED
            count = self._until_timer(count)
            self._run_slice(task, count)
            while task.state == RUNNABLE and self.machine_of(task).preempt_count and self.sliced:
                self._run_slice(task, _FINISH_STEP_SLICE)
            self._wake_expired()

    def _until_timer(self, count: int) -> int:
        """A slice ends at the next timer expiry (counted: the clock must move)."""
        deadline = self._next_timer()
        if deadline is None:
            return count
        left = max(1, deadline - self.m.clock)
        return min(count, left) if count else left

    def _run_slice(self, task: Task, count: int) -> None:
        m = self.machine_of(task)
        if self.max_insns is not None:
            left = self.max_insns - self.retired
            if left <= 0:
                self._runaway(task, f"instruction budget of {self.max_insns} exhausted")
            count = min(count, left) if count else left
        timeout_us = 0
        if self.timeout is not None:
            left_s = self.timeout - (time.monotonic() - self._started)
            if left_s <= 0:
                self._runaway(task, f"timeout of {self.timeout} s reached")
            if not self.sliced:
                timeout_us = max(1, int(left_s * 1e6))
        self._switch_to(m, task)
        signals = self._signals_of(task)
        if signals is not None:
            signals.before_resume(task)
            exc = m._take_abort()
            if exc is not None:         # a signal ended the process
                raise exc
            if task.state == DONE:      # ... a child process, which the run outlives
                return
        gpr = m.cpu.gpr
        self._ended_by_us = False
        if self.sliced:
            m._hits.value = self.rng.randint(1, HIT_SLICE)
        self.running = m
        watched = m is not self.m and watch_also(m.engine, self.m.engine)   # Ctrl-C stops it too
        try:
            error = m.engine.start(gpr[RIP], m.exit_address, timeout_us, count)
        finally:
            if watched and unwatch(m.engine):
                m.engine.interrupted = True
        done = m.engine.retired(count)
        self.retired += done
        if count:
            m.clock += done
        if m is not self.m:                 # the run's one clock is the first machine's
            self.m.clock = m.clock
        m._paused()
        self._after_slice(m, task, error, count, done)
        over = self.max_insns is not None and self.retired >= self.max_insns
        late = self.timeout is not None and time.monotonic() - self._started >= self.timeout
        if over or late:
            live = [t for t in self.tasks if t.state != DONE]
            if live:
                culprit = task if task.state != DONE else live[0]
                self._runaway(culprit, f"instruction budget of {self.max_insns} exhausted" if over
                              else f"timeout of {self.timeout} s reached")

    def _switch_to(self, m: Machine, task: Task) -> None:
        if m is not self.m:
            m.clock = self.m.clock
            m.sched = self
            m._depth = self.m._depth
        if m.current_task is not task or m._engine_owner is not task:
            if task.context is not None:
                m._uc.context_restore(task.context)
            self.switches += 1
        m.set_current_task(task)
        m._engine_owner = task
        if m is not self.m:
            # The first machine (the caller's handle) names the running task of any
            # process, as the kernel's ``current``: a handler closing over it sees
            # the pid and tid that hit (its registers stay the engine's own).
            self.m.set_current_task(task)
        if task.restart is not None:        # back over the syscall: it runs again (emu.linux._wait)
            gpr = m.cpu.gpr
            gpr[RIP] -= 2
            gpr[RAX] = task.restart
            task.restart = None
            task.retrying = True
            task.wake_value = None
        elif task.wake_value is not None:
            m.cpu.gpr[RAX] = task.wake_value
            task.wake_value = None

    def _after_slice(self, m: Machine, task: Task, error: object, count: int, done: int) -> None:
        exc = m._take_abort()
        if exc is not None:
            self._save(task)
            raise exc
        fault = m._fault_of(error)           # type: ignore[arg-type]
        if m.engine.interrupted:             # Ctrl-C: the next run resumes here (a fault recurs)
            self._save(task)
            raise KeyboardInterrupt
        rip = m.cpu.gpr[RIP]
        if fault is None and rip == m.exit_address:
            if self.process:
                fault = GuestFault("guest fault: the program returned into the emulator's exit page",
                                   rip=rip, reason="exception")
            else:
                self.finish(task, to_signed64(m.cpu.gpr[RAX]))
                return
        if fault is None and task.state != DONE and not self._ended_by_us and not m.engine.cut_requested \
                and not (count and done >= count) and m._stopped_on_hlt(rip) \
                and not m.engine.timed_out():
            fault = GuestFault(f"guest fault: hlt at {m.symbolize(rip - 1)} ({rip - 1:#x})",
                               rip=rip - 1, reason="exception")
        if fault is not None:
            signals = self._signals_of(task)
            if signals is not None and signals.on_fault(task, fault):
                self._save(task)        # its handler takes it when the task resumes
                return
            if signals is not None and signals.end_of_fault(task, fault):
                return                  # a child process died of it; the run goes on
            if self.process:
                self._save(task)
                raise fault
            task.fault = fault
            self.finish(task, None)
            return
        self._save(task)

    def _save(self, task: Task) -> None:
        if task.state == DONE:
            return
        uc = self.machine_of(task)._uc
        # Into the task's own context when it has one (0.3 us; a new one is 1.5 us):
        # every task has a context object of its own, never shared.
        if task.context is not None:
            uc.context_update(task.context)
        else:
            task.context = uc.context_save()

    # --- waiting ------------------------------------------------------------------------------
    def _expire(self, live: list[Task]) -> None:
        """Every live task is blocked: jump the clock to the next deadline, or report
        the deadlock."""
        timed = [t.deadline for t in live if t.deadline is not None]
        timer = self._next_timer()
        if not timed and timer is None:
            self._deadlock(live)
        self.m.clock = max(self.m.clock, min(timed + ([timer] if timer is not None else [])))
        self._wake_expired()
        if not timed and not any(t.state == RUNNABLE for t in live):
            self._deadlock(live)        # the timer fired and woke nobody: nothing else will

    def _wake_expired(self) -> None:
        now = self.m.clock
        for hooks in self._all_signals():
            hooks.expire(now)
        for t in self.tasks:
            if t.state == BLOCKED and t.deadline is not None and t.deadline <= now:
                on_timeout = t.on_timeout
                if on_timeout is not None:
                    on_timeout(t)
                self.wake(t, t.wake_value if t.wake_value is not None else 0)

    def _deadlock(self, live: list[Task]) -> None:
        where = ", ".join(f"{t.name} (tid {t.tid}) blocked on {t.blocked_on or 'nothing'} "
                          f"at {self.machine_of(t).symbolize(self.rip_of(t))} ({self.rip_of(t):#x})"
                          for t in live)
        raise GuestFault(f"deadlock: every live task is blocked: {where}",
                         rip=self.rip_of(live[0]), reason="deadlock")

    def rip_of(self, task: Task) -> int:
        m = self.machine_of(task)
        if task is m._engine_owner or task.context is None:
            return m.cpu.gpr[RIP]
        return int(task.context.reg_read(UC_X86_REG_RIP))

    def _runaway(self, task: Task, what: str) -> None:
        m = self.machine_of(task)
        rip = m.original_rip(self.rip_of(task))     # not a probe's out-of-line copy
        reason = "timeout" if what.startswith("timeout") else "insn-budget"
        raise GuestFault(f"guest ran away: {what} at {m.symbolize(rip)} ({rip:#x}) "
                         f"in {task.name} (tid {task.tid})", rip=rip, reason=reason)
