"""Guest tasks (threads of execution) and their scheduling states.

A task owns its registers (a Unicorn context while it is not on the CPU) and
a stack; memory is shared by every task of a machine. The scheduler
(:mod:`emu._sched`) owns every state change; the fields below are what a
client reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._memory import Region

if TYPE_CHECKING:
    from ._errors import GuestFault

__all__ = ["Task", "RUNNABLE", "BLOCKED", "DONE"]

RUNNABLE = "runnable"
BLOCKED = "blocked"
DONE = "done"


@dataclass(eq=False)
class Task:
    """A guest thread of execution.

    Attributes:
        tid: positive thread id, as ``gettid()`` would return it; unique and
            increasing within a machine.
        stack: the region holding this task's stack.
        name: ``"task-<tid>"`` unless given.
        done: the task has ended (returned, exited or faulted).
        result: RAX as a signed 64-bit value once a spawned function returned
            (the exit status for a thread that called ``exit``), else ``None``.
        fault: the :class:`~emu.GuestFault` that ended the task, else ``None``.
        state: ``"runnable"``, ``"blocked"`` (parked by the scheduler, e.g. on a
            futex) or ``"done"``.
        blocked_on: what a blocked task waits for, for messages (``"futex 0x..."``).
        comm: the command name tracing shows (``TASK_COMM_LEN``: 15 characters):
            the program's file name for its threads, else the task's name.
        pid: the process (thread group) the task belongs to: its leader's tid,
            the task's own tid for tasks of a machine without processes.
    """

    tid: int
    stack: Region = field(repr=False)
    name: str = ""
    result: int | None = None
    fault: GuestFault | None = field(default=None, repr=False)
    state: str = RUNNABLE
    blocked_on: str = ""
    comm: str = ""
    pid: int = 0
    # --- owned by the scheduler and the syscall layer ----------------------------------
    context: Any = field(default=None, repr=False)        # registers while off the CPU
    wake_value: int | None = field(default=None, repr=False)   # RAX to set when resumed
    deadline: int | None = field(default=None, repr=False)     # virtual ns, while blocked
    on_timeout: Any = field(default=None, repr=False)     # called when the deadline passes
    clear_child_tid: int = field(default=0, repr=False)   # CLONE_CHILD_CLEARTID address
    spawned: bool = field(default=False, repr=False)      # made by Machine.spawn
    # The system call to run again when the task is woken (emu.linux._wait), or None.
    restart: int | None = field(default=None, repr=False)
    # Running that call again (set when it is resumed, cleared when it returns),
    # and the deadline of its wait: a wake that finds nothing keeps the first one.
    retrying: bool = field(default=False, repr=False)
    retry_deadline: int | None = field(default=None, repr=False)
    machine: Any = field(default=None, repr=False)        # the Machine (address space) it runs in
    process: Any = field(default=None, repr=False)        # its process (emu.linux.Kernel), or None
    # The syscall layer's per-thread signal state (emu.linux._signal.ThreadSignals):
    # mask, pending queue, alternate stack, saved contexts of its signal frames.
    signal: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"task-{self.tid}"
        if not self.comm:
            self.comm = self.name[:15]
        if not self.pid:
            self.pid = self.tid

    @property
    def done(self) -> bool:
        return self.state == DONE

    @property
    def stack_top(self) -> int:
        return self.stack.end

    def __hash__(self) -> int:
        return id(self)
