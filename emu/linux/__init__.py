"""A Linux x86-64 system call layer for guest programs (one process, its threads).

The system calls are a table (:data:`SYSCALLS`, number -> handler) filled by the
``@syscall`` decorator in the ``_sys_*`` modules; add or replace a handler the
same way. What a handler may touch on the host is decided by :class:`FsPolicy`
(deny by default). ``Machine.from_elf`` sets all of this up.
"""

from . import (  # noqa: F401  (register handlers)
    _epoll,
    _eventfd,
    _exec,
    _sys_info,
    _sys_io,
    _sys_misc,
    _sys_mm,
    _sys_path,
    _sys_pipe,
    _sys_proc,
    _sys_process,
    _sys_sendfile,
    _sys_signal,
    _sys_thread,
)
from ._diag import Diagnostics
from ._fs import SYSTEM_LIBRARY_DIRS, FsPolicy, Mount, parse_mount
from ._kernel import Kernel, ProcessExit
from ._mm import AddressSpace
from ._registry import SYSCALLS, KernelError, syscall
from ._sysnr import SYSCALL_NAMES, SYSCALL_NUMBERS

__all__ = [
    "AddressSpace", "Diagnostics", "FsPolicy", "Kernel", "KernelError", "Mount", "ProcessExit", "SYSCALLS",
    "SYSCALL_NAMES", "SYSCALL_NUMBERS", "SYSTEM_LIBRARY_DIRS", "parse_mount", "syscall",
]
