"""Process system calls: identity, TLS (threads: :mod:`._sys_thread`, signals:
:mod:`._sys_signal`)."""

from __future__ import annotations

import errno
import struct

from ._kernel import Kernel
from ._registry import KernelError, s32, syscall

# arch/x86/include/uapi/asm/prctl.h
ARCH_SET_GS, ARCH_SET_FS, ARCH_GET_FS, ARCH_GET_GS = 0x1001, 0x1002, 0x1003, 0x1004
_ARCH_SEGMENT = {ARCH_SET_FS: "fs_base", ARCH_GET_FS: "fs_base",
                 ARCH_SET_GS: "gs_base", ARCH_GET_GS: "gs_base"}


@syscall("arch_prctl")
def sys_arch_prctl(k: Kernel, code: int, addr: int) -> int:
    reg = _ARCH_SEGMENT.get(s32(code))
    if reg is None:
        raise KernelError(errno.EINVAL)
    if code in (ARCH_SET_FS, ARCH_SET_GS):
        k.cpu.write(reg, addr)
    else:
        k.write(addr, struct.pack("<Q", k.cpu.read(reg)))
    return 0


@syscall("rseq")
def sys_rseq(k: Kernel) -> int:
    """Restartable sequences need preemption to matter; the C library copes
    with ``ENOSYS`` (glibc falls back, musl never asks)."""
    raise KernelError(errno.ENOSYS)


@syscall("getpid", "getppid", "getpgrp", "getsid", "getpgid")
def sys_getpid(k: Kernel) -> int:
    return k.pid


@syscall("getuid", "geteuid")
def sys_getuid(k: Kernel) -> int:
    return k.uid


@syscall("getgid", "getegid")
def sys_getgid(k: Kernel) -> int:
    return k.gid


@syscall("umask")
def sys_umask(k: Kernel, mask: int) -> int:
    old, k.umask = k.umask, mask & 0o777
    return old
