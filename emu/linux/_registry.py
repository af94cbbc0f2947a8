"""The system call table: number -> handler, filled by ``@syscall`` decorators.

A handler is ``fn(k, a0, a1, ...) -> int`` taking the kernel and as many raw
64-bit arguments (rdi, rsi, rdx, r10, r8, r9) as it declares. It returns the
result, or raises :class:`KernelError` for ``-errno``. Handler modules register
themselves at import (``emu.linux`` imports them all); a user can add or replace
one the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from ._sysnr import SYSCALL_NUMBERS

__all__ = ["KernelError", "syscall", "SYSCALLS", "Handler", "s32"]

Handler = Callable[..., int]

# nr -> (handler, number of arguments it takes)
SYSCALLS: dict[int, tuple[Handler, int]] = {}


class KernelError(Exception):
    """A system call fails with ``-errno`` (never leaves the syscall layer)."""

    def __init__(self, errno: int) -> None:
        super().__init__(errno)
        self.errno = errno


def syscall(*names: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of the named system calls."""
    def register(fn: Handler) -> Handler:
        nargs = len(inspect.signature(fn).parameters) - 1
        if not 0 <= nargs <= 6:
            raise TypeError(f"{fn.__name__}: a syscall handler takes the kernel and 0..6 arguments")
        for name in names:
            if name not in SYSCALL_NUMBERS:
                raise KeyError(f"{fn.__name__}: no x86-64 system call named {name!r}")
            SYSCALLS[SYSCALL_NUMBERS[name]] = (fn, nargs)
        return fn
    return register


def s32(value: int) -> int:
    """The C ``int`` in a 64-bit argument register (the kernel ignores bits 32..63)."""
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value >> 31 else value

