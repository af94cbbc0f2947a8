"""Blocking system calls that run again when woken (``-ERESTARTSYS`` made simple).

A read of an empty pipe, a ``wait4`` with no child ended, a ``poll`` with
nothing ready: the handler calls :func:`block_on`, which parks the task in the
scheduler on one or more :class:`WaitQueue` and stops the system call there.
When a queue is woken the task runs the same ``syscall`` instruction again (RIP
goes back over it and RAX gets the number back, as the kernel's restart path
does), so the handler simply looks again: a wake that finds nothing to do
blocks again. A signal that interrupts the wait runs its handler first, then
the call runs again (``SA_RESTART`` behaviour, for every handler). A deadline
ends the wait without running the call again: the call returns ``on_timeout``'s
value.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._regtable import RAX
from ._registry import KernelError

if TYPE_CHECKING:
    from .._sched import Scheduler
    from .._task import Task
    from ._kernel import Kernel

__all__ = ["WaitQueue", "block_on", "Blocked", "deadline_after"]


class Blocked(Exception):
    """Raised by :func:`block_on` out of a handler: the syscall hook leaves RAX
    alone (the task is parked and will run the call again)."""


class WaitQueue:
    """Tasks waiting for one thing (data in a pipe, a child's end, ...)."""

    def __init__(self) -> None:
        self._waiters: list[tuple[Scheduler, Task]] = []

    def add(self, sched: Scheduler, task: Task) -> None:
        self._waiters.append((sched, task))

    def wake_all(self) -> None:
        """Every waiter runs its system call again (a spurious wake is harmless)."""
        waiters, self._waiters = self._waiters, []
        for sched, task in waiters:
            sched.wake(task, 0)

    def __bool__(self) -> bool:
        return bool(self._waiters)


def deadline_after(k: Kernel, timeout_ns: int | None) -> int | None:
    """The virtual time a wait of ``timeout_ns`` ends: from now for a new call,
    the first wait's deadline for a call running again after a wake that found
    nothing (a timeout is not stretched by wakes)."""
    if timeout_ns is None:
        return None
    task = k.m.current_task
    if task.retrying and task.retry_deadline is not None:
        return task.retry_deadline
    return k.m.clock + timeout_ns


def block_on(k: Kernel, what: str, queues: list[WaitQueue], deadline: int | None = None,
             on_timeout: Callable[[], int] | None = None) -> None:
    """Park the current task on ``queues`` and end the system call; it runs again
    when one of them is woken. Never returns.

    Args:
        what: what the task waits for, for a deadlock report ("pipe read").
        deadline: virtual time (ns) when the wait ends without a wake.
        on_timeout: the call's result at the deadline (default 0).

    Raises:
        Blocked: always (the syscall hook's signal to leave RAX alone).
        KernelError: ``EAGAIN`` outside a run (a ``call()``: nothing else runs).
    """
    m = k.m
    sched = m.sched
    if sched is None:
        raise KernelError(errno.EAGAIN)
    task = m.current_task
    for queue in queues:
        queue.add(sched, task)
    task.restart = int(k.cpu.gpr[RAX])
    task.retry_deadline = deadline
    sched.block(task, what, deadline)
    if deadline is not None:
        def timed_out(t: Task) -> None:
            t.restart = None
            t.wake_value = on_timeout() if on_timeout is not None else 0
        task.on_timeout = timed_out
    raise Blocked
