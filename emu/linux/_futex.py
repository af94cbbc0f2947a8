"""Futex wait queues of one process (kernel/futex/, ``futex_q`` per waiter).

A waiter is a task parked in the scheduler; waking it sets its ``futex``
syscall's result. Queues are keyed by the user address (one process: private
and shared futexes are the same thing here) and kept in arrival order, so a
wake takes the oldest waiters first, as the kernel's hash bucket list does.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._task import BLOCKED, Task

if TYPE_CHECKING:
    from .._sched import Scheduler

__all__ = ["FutexTable", "FUTEX_BITSET_MATCH_ANY"]

FUTEX_BITSET_MATCH_ANY = 0xFFFF_FFFF


@dataclass(eq=False)
class _Waiter:
    task: Task
    bitset: int


class FutexTable:
    def __init__(self) -> None:
        self._queues: dict[int, list[_Waiter]] = {}

    def wait(self, sched: Scheduler, task: Task, uaddr: int, bitset: int,
             deadline: int | None) -> None:
        """Queue ``task`` on ``uaddr`` and park it (the caller checked the value)."""
        waiter = _Waiter(task, bitset)
        self._queues.setdefault(uaddr, []).append(waiter)
        sched.block(task, f"futex {uaddr:#x}", deadline)
        task.on_timeout = self._timeout_for(uaddr, waiter)

    def wake(self, sched: Scheduler, uaddr: int, nr: int, bitset: int = FUTEX_BITSET_MATCH_ANY) -> int:
        """Wake up to ``nr`` waiters of ``uaddr`` whose bitset meets ``bitset``."""
        queue = self._queues.get(uaddr)
        if not queue or nr <= 0:
            return 0
        woken = 0
        for waiter in list(queue):
            if woken >= nr:
                break
            if waiter.bitset & bitset:
                queue.remove(waiter)
                sched.wake(waiter.task, 0)
                woken += 1
        if not queue:
            del self._queues[uaddr]
        return woken

    def requeue(self, sched: Scheduler, uaddr: int, nr_wake: int, uaddr2: int, nr_requeue: int) -> int:
        """Wake ``nr_wake`` waiters of ``uaddr``, move up to ``nr_requeue`` others
        to ``uaddr2``; returns how many were woken plus moved."""
        woken = self.wake(sched, uaddr, nr_wake)
        queue = self._queues.get(uaddr, [])
        moved = queue[:max(nr_requeue, 0)]
        if moved:
            del queue[:len(moved)]
            if not queue:
                self._queues.pop(uaddr, None)
            self._queues.setdefault(uaddr2, []).extend(moved)
            for waiter in moved:
                waiter.task.blocked_on = f"futex {uaddr2:#x}"
                waiter.task.on_timeout = self._timeout_for(uaddr2, waiter)
        return woken + len(moved)

    def forget(self, task: Task) -> None:
        """A task that ends leaves every queue (a thread killed by exit_group)."""
        for uaddr, queue in list(self._queues.items()):
            queue[:] = [w for w in queue if w.task is not task]
            if not queue:
                del self._queues[uaddr]

    def waiters(self, uaddr: int) -> list[Task]:
        return [w.task for w in self._queues.get(uaddr, []) if w.task.state == BLOCKED]

    def _timeout_for(self, uaddr: int, waiter: _Waiter) -> Callable[[Task], None]:
        def timed_out(t: Task) -> None:
            self._remove(uaddr, waiter)
            t.wake_value = -errno.ETIMEDOUT
        return timed_out

    def _remove(self, uaddr: int, waiter: _Waiter) -> None:
        queue = self._queues.get(uaddr)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._queues[uaddr]
