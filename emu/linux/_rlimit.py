"""Resource limits of a process (``signal_struct->rlim``), and their defaults.

The defaults are what a fresh shell sees, made consistent with what the emulator
really enforces: ``RLIMIT_NOFILE`` is the descriptor table's size
(:data:`._files.MAX_FDS`, hard limit too: the table cannot grow), ``RLIMIT_STACK``
the mapped stack, ``RLIMIT_AS`` the machine's ``mem_limit``. Lowering
``RLIMIT_AS`` lowers ``Memory.limit``, so a later ``mmap``/``brk`` past it fails
as in ``mm/mmap.c`` (``may_expand_vm``).

Rules from ``kernel/sys.c`` (``do_prlimit``): a resource past ``RLIM_NLIMITS`` is
``EINVAL``, so is ``rlim_cur > rlim_max``; raising a hard limit needs
``CAP_SYS_RESOURCE`` (the guest has none: ``EPERM``), and ``RLIMIT_NOFILE``'s
hard limit may not pass ``sysctl_nr_open``. Threads share their process's limits.
"""

from __future__ import annotations

import errno
import weakref
from typing import TYPE_CHECKING

from ._files import MAX_FDS
from ._registry import KernelError

if TYPE_CHECKING:
    from ._kernel import Kernel

__all__ = ["RLIM_INFINITY", "RLIM_NLIMITS", "RLIMIT_AS", "RLIMIT_NOFILE", "RLIMIT_STACK",
           "get_rlimit", "set_rlimit", "inherit_rlimits"]

# include/uapi/asm-generic/resource.h
(RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_DATA, RLIMIT_STACK, RLIMIT_CORE, RLIMIT_RSS, RLIMIT_NPROC,
 RLIMIT_NOFILE, RLIMIT_MEMLOCK, RLIMIT_AS, RLIMIT_LOCKS, RLIMIT_SIGPENDING, RLIMIT_MSGQUEUE,
 RLIMIT_NICE, RLIMIT_RTPRIO, RLIMIT_RTTIME) = range(16)
RLIM_NLIMITS = 16
RLIM_INFINITY = (1 << 64) - 1
NR_OPEN = MAX_FDS                   # sysctl_nr_open: the table's size
STACK_SIZE = 8 << 20                # emu._elf.PROCESS_STACK_SIZE (a test keeps them equal)

# resource -> (rlim_cur, rlim_max) of a fresh login shell (RLIMIT_AS: see _defaults).
_DEFAULTS: dict[int, tuple[int, int]] = {
    RLIMIT_CPU: (RLIM_INFINITY, RLIM_INFINITY),
    RLIMIT_FSIZE: (RLIM_INFINITY, RLIM_INFINITY),
    RLIMIT_DATA: (RLIM_INFINITY, RLIM_INFINITY),
    RLIMIT_STACK: (STACK_SIZE, RLIM_INFINITY),
    RLIMIT_CORE: (0, RLIM_INFINITY),
    RLIMIT_RSS: (RLIM_INFINITY, RLIM_INFINITY),
    RLIMIT_NPROC: (63_000, 63_000),
    RLIMIT_NOFILE: (MAX_FDS, NR_OPEN),
    RLIMIT_MEMLOCK: (8 << 20, 8 << 20),
    RLIMIT_LOCKS: (RLIM_INFINITY, RLIM_INFINITY),
    RLIMIT_SIGPENDING: (63_000, 63_000),
    RLIMIT_MSGQUEUE: (819_200, 819_200),        # MQ_BYTES_MAX
    RLIMIT_NICE: (0, 0),
    RLIMIT_RTPRIO: (0, 0),
    RLIMIT_RTTIME: (RLIM_INFINITY, RLIM_INFINITY),
}

# Kernel -> its limits, made on first use (the kernel object owns no such field).
_TABLES: weakref.WeakKeyDictionary[Kernel, dict[int, tuple[int, int]]] = weakref.WeakKeyDictionary()


def _table(k: Kernel) -> dict[int, tuple[int, int]]:
    table = _TABLES.get(k)
    if table is None:
        limit = k.m.mem.limit
        table = _TABLES[k] = {**_DEFAULTS, RLIMIT_AS: (limit, limit)}
    return table


def get_rlimit(k: Kernel, resource: int) -> tuple[int, int]:
    """``(rlim_cur, rlim_max)`` of ``resource``; ``EINVAL`` for no such resource."""
    if not 0 <= resource < RLIM_NLIMITS:
        raise KernelError(errno.EINVAL)
    return _table(k)[resource]


def set_rlimit(k: Kernel, resource: int, cur: int, new_max: int) -> None:
    """Set a limit as ``do_prlimit`` does for an unprivileged process.

    Raises:
        KernelError: ``EINVAL`` (no such resource, ``cur > max``), ``EPERM``
            (raising the hard limit, or ``RLIMIT_NOFILE`` past ``nr_open``).
    """
    _, old_max = get_rlimit(k, resource)
    if cur > new_max:
        raise KernelError(errno.EINVAL)
    if resource == RLIMIT_NOFILE and new_max > NR_OPEN:
        raise KernelError(errno.EPERM)
    if new_max > old_max:
        raise KernelError(errno.EPERM)
    _table(k)[resource] = (cur, new_max)
    if resource == RLIMIT_AS:
        k.m.mem.limit = cur       # cur <= hard <= the machine's own limit: only ever lower


def inherit_rlimits(parent: Kernel, child: Kernel) -> None:
    """A new process starts with its parent's limits (``copy_signal``)."""
    table = _TABLES.get(parent)
    if table is not None:
        _TABLES[child] = dict(table)
        child.m.mem.limit = min(child.m.mem.limit, table[RLIMIT_AS][0])
