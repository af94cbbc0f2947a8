"""Tasks and their scheduling, the part of :class:`emu.Machine` that DESIGN's
``emu.sched`` layer offers: ``spawn``, ``run_tasks``, the preemption points
probes call at hits, and the virtual clock (:mod:`emu._sched` is the runner).

A mixin of :class:`~emu._machine.Machine`: the attributes it uses are the
Machine's own (declared below for type checking only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from unicorn.x86_const import UC_X86_REG_RIP

from ._errors import EmuError
from ._memory import PROT_RW, Region
from ._regtable import ARG_REGS, FAST_NAMES, MASK64, UC_ID
from ._sched import Scheduler
from ._task import Task

if TYPE_CHECKING:
    from unicorn import Uc

    from ._cpu import Cpu
    from ._engine import Engine
    from ._interrupt import Owner
    from ._machine import Machine
    from ._memory import Memory

__all__ = ["TaskingMixin", "STACK_SIZE", "STACK_TOP", "SPAWN_STACK_SIZE", "ABI_CLEAR_FLAGS", "NEVER"]

STACK_SIZE = 0x100000
STACK_TOP = 0x7FFF_FFFF_0000
SPAWN_STACK_SIZE = 0x40000         # a spawned task's stack unless told otherwise
NEVER = 1 << 62                    # a hit countdown that never runs out
# Flags the System V ABI wants clear when a function is called (DF) and that would
# break every later call if a fault or a handler left them set (TF traps each
# instruction, AC checks alignment).
ABI_CLEAR_FLAGS = (1 << 8) | (1 << 10) | (1 << 18)     # TF, DF, AC
_T = TypeVar("_T")


class TaskingMixin:
    """``spawn``/``run_tasks``, task bookkeeping, preemption points, ``now``."""

    if TYPE_CHECKING:
        tasks: list[Task]
        current_task: Task
        on_switch: list[Callable[[Task], None]]
        next_tid: Callable[[], int] | None
        mem: Memory
        cpu: Cpu
        engine: Engine
        sched: Scheduler | None
        clock: int
        preempt_count: int
        _uc: Uc
        _depth: int
        _hits: Any
        _engine_owner: Task | None
        _exit: int
        _owner: Owner

        def resolve(self, func: str | int) -> int: ...
        def _start(self) -> None: ...
        def _outermost(self, fn: Callable[..., _T], *args: Any) -> _T: ...
        def exclusive(self) -> Any: ...

    def parked_rips(self) -> set[int]:
        """Where the unfinished tasks that are off the CPU will resume."""
        return {int(t.context.reg_read(UC_X86_REG_RIP)) for t in self.tasks
                if not t.done and t.context is not None}

    def new_task(self, stack_size: int = STACK_SIZE, name: str | None = None) -> Task:
        """A new task with a stack of its own and no code to run yet: make it
        ``current_task`` to run :meth:`call` on it, or use :meth:`spawn`."""
        with self._owner:
            region = self.mem.map_anywhere(stack_size, PROT_RW, "[stack]", near=STACK_TOP - STACK_SIZE)
            return self.add_task(region, name)

    def add_task(self, stack: Region, name: str | None = None) -> Task:
        """Register a task whose stack is ``stack`` (the syscall layer's ``clone``)."""
        tid = self.next_tid() if self.next_tid is not None else max(t.tid for t in self.tasks) + 1
        task = Task(tid, stack, name or "", machine=self)
        self.tasks.append(task)
        return task

    def spawn(self, func: str | int, *args: int, name: str | None = None,
              stack_size: int | None = None) -> Task:
        """A new task that will call ``func(*args)`` (System V, as :meth:`call`)
        when :meth:`run_tasks` runs it. It has its own registers and stack and shares
        memory; it starts with the machine's current registers (FPU state, FS base)
        but for its stack, its arguments and RIP.

        Raises:
            SymbolNotFound: ``func`` is an unknown name.
            EmuError: more than six arguments.
        """
        addr = self.resolve(func)
        if len(args) > len(ARG_REGS):
            raise EmuError(f"spawn({func!r}) takes at most {len(ARG_REGS)} integer arguments, "
                           f"got {len(args)}")
        with self._owner:
            task = self.new_task(stack_size or SPAWN_STACK_SIZE, name)
            task.spawned = True
            sp = ((task.stack_top - 64) & ~0xF) - 8
            self.mem.write_u64(sp, self._exit)
            ctx = self._uc.context_save()
            values = {UC_ID["rsp"]: sp, UC_ID["rbp"]: 0, UC_ID["rip"]: addr,
                      UC_ID["eflags"]: self.cpu.eflags & ~ABI_CLEAR_FLAGS}
            for reg, value in zip(ARG_REGS, args, strict=False):
                values[UC_ID[FAST_NAMES[reg]]] = value & MASK64
            for reg_id, value in values.items():
                ctx.reg_write(reg_id, value)
            task.context = ctx
            return task

    def run_tasks(self, seed: int = 0, timeslice: int = 1000, max_insns: int | None = None,
                  timeout: float | None = None) -> list[Task]:
        """Run every spawned task that is not done to its end, interleaved on one
        virtual CPU by a scheduler seeded with ``seed`` (see :mod:`emu._sched`).

        Slices last ``randint(1, timeslice)`` instructions; a slice also ends at a
        ``pause``, when its task blocks, and maybe at a probe hit. The same program,
        probes and seed give the same interleaving.

        Returns:
            The tasks it ran, in spawn order; each has ``result`` or ``fault``.

        Raises:
            GuestFault: ``reason="deadlock"`` when every live task is blocked; the
                budget or timeout of the whole run was reached (naming the task).
            KeyboardInterrupt: Ctrl-C stopped the run; the next ``run_tasks``
                resumes the unfinished tasks.
            EmuError: another host thread is inside this machine.
            ValueError: a limit that is not positive (``None``: no limit).
            BaseException: what a probe handler raised.
        """
        tasks = [t for t in self.tasks if t.spawned and not t.done]
        machine: Machine = self  # type: ignore[assignment]   # the mixin is only ever a Machine
        self._schedule(Scheduler(machine, tasks, seed=seed, timeslice=timeslice, max_insns=max_insns,
                                 timeout=timeout))
        return tasks

    def _schedule(self, sched: Scheduler) -> None:
        with self._owner:
            if self._depth:
                raise EmuError("run_tasks()/run() cannot be called from inside a probe handler or hook")
            self._outermost(self._run_scheduler, sched)

    def _run_scheduler(self, sched: Scheduler) -> None:
        self._start()
        saved = self.current_task
        self.sched = sched
        self._depth += 1
        try:
            sched.run()
        finally:
            self._depth -= 1
            self.sched = None
            self._hits.value = NEVER
            self.set_current_task(saved)
            self._engine_owner = None

    def set_current_task(self, task: Task) -> None:
        """Make ``task`` the current one (the kernel's ``current``) and tell
        :attr:`on_switch`. Every change of :attr:`current_task` goes through here."""
        self.current_task = task
        for fn in self.on_switch:
            fn(task)

    def preempt_point(self) -> None:
        """A probe hit (called from inside a hook): the scheduler may end the
        slice after the current instruction. Each slice gets a seeded number of
        hits (:meth:`Scheduler.new_slice`); a countdown keeps a hit cheap."""
        hits = self._hits
        n = hits.value - 1
        hits.value = n
        if n <= 0:
            self._cut_at_hit()

    def _cut_at_hit(self) -> None:
        sched = self.sched
        if sched is None or not sched.sliced:
            self._hits.value = NEVER
        elif self._depth == 1 and not self.preempt_count:
            self._end_slice_after_this()
        else:                   # inside a nested call or a single-step: the next hit
            self._hits.value = 1

    def _end_slice_after_this(self) -> None:
        if self.engine.cut():
            self._hits.value = NEVER

    def now(self) -> int:
        """The virtual clock in ns (one instruction retired under the scheduler, one
        ns), exact inside a hook when the run counts (:attr:`exact_clock`: every
        run, call or scheduled; a counted scheduler slice otherwise)."""
        if self._depth == 0:
            return self.clock
        return self.clock + self.engine.in_flight()

    def _on_pause(self, _addr: int) -> None:
        sched = self.sched
        if sched is not None and sched.sliced and self._depth == 1:
            self._end_slice_after_this()
