"""Guest tasks (threads). One main task for now; the scheduler comes later."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._memory import Region

__all__ = ["Task"]


@dataclass(eq=False)
class Task:
    """A guest thread of execution.

    Attributes:
        tid: positive thread id, as ``gettid()`` would return it.
        stack: the region holding this task's stack.
    """

    tid: int
    stack: Region = field(repr=False)

    @property
    def stack_top(self) -> int:
        return self.stack.end

    def __hash__(self) -> int:
        return id(self)
