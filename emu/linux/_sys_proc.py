"""Process system calls: identity, TLS (threads: :mod:`._sys_thread`, signals:
:mod:`._sys_signal`).

Credentials are an unprivileged user's (``kernel/sys.c``, ``kernel/groups.c``):
one supplementary group (the user's own), every id the same real, effective and
saved value, and a ``set*id`` may only name those (``EPERM`` otherwise, as
without ``CAP_SETUID``/``CAP_SETGID``); ``setgroups`` needs ``CAP_SETGID``.
"""

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


@syscall("getpid")
def sys_getpid(k: Kernel) -> int:
    return k.pid


@syscall("getuid", "geteuid")
def sys_getuid(k: Kernel) -> int:
    return k.uid


@syscall("getgid", "getegid")
def sys_getgid(k: Kernel) -> int:
    return k.gid


@syscall("getgroups")
def sys_getgroups(k: Kernel, size: int, grouplist: int) -> int:
    """The count when ``size`` is 0; ``EINVAL`` when the list cannot hold them."""
    size = s32(size)
    groups = [k.gid]
    if size < 0:
        raise KernelError(errno.EINVAL)
    if size:
        if size < len(groups):
            raise KernelError(errno.EINVAL)
        k.write(grouplist, struct.pack(f"<{len(groups)}I", *groups))
    return len(groups)


@syscall("setgroups")
def sys_setgroups(k: Kernel, size: int, grouplist: int) -> int:
    raise KernelError(errno.EPERM)


@syscall("getresuid")
def sys_getresuid(k: Kernel, ruid: int, euid: int, suid: int) -> int:
    for addr in (ruid, euid, suid):
        k.write(addr, struct.pack("<I", k.uid))
    return 0


@syscall("getresgid")
def sys_getresgid(k: Kernel, rgid: int, egid: int, sgid: int) -> int:
    for addr in (rgid, egid, sgid):
        k.write(addr, struct.pack("<I", k.gid))
    return 0


def _set_ids(own: int, *ids: int) -> int:
    """``-1`` leaves an id as it is; any other value must be the one id there is."""
    for value in ids:
        value &= 0xFFFF_FFFF
        if value not in (own, 0xFFFF_FFFF):
            raise KernelError(errno.EPERM)
    return 0


@syscall("setuid")
def sys_setuid(k: Kernel, uid: int) -> int:
    if uid & 0xFFFF_FFFF == 0xFFFF_FFFF:
        raise KernelError(errno.EINVAL)
    return _set_ids(k.uid, uid)


@syscall("setgid")
def sys_setgid(k: Kernel, gid: int) -> int:
    if gid & 0xFFFF_FFFF == 0xFFFF_FFFF:
        raise KernelError(errno.EINVAL)
    return _set_ids(k.gid, gid)


@syscall("setreuid")
def sys_setreuid(k: Kernel, ruid: int, euid: int) -> int:
    return _set_ids(k.uid, ruid, euid)


@syscall("setregid")
def sys_setregid(k: Kernel, rgid: int, egid: int) -> int:
    return _set_ids(k.gid, rgid, egid)


@syscall("setresuid")
def sys_setresuid(k: Kernel, ruid: int, euid: int, suid: int) -> int:
    return _set_ids(k.uid, ruid, euid, suid)


@syscall("setresgid")
def sys_setresgid(k: Kernel, rgid: int, egid: int, sgid: int) -> int:
    return _set_ids(k.gid, rgid, egid, sgid)


@syscall("setfsuid")
def sys_setfsuid(k: Kernel, uid: int) -> int:
    """Returns the previous fsuid whether or not the change was allowed."""
    return k.uid


@syscall("setfsgid")
def sys_setfsgid(k: Kernel, gid: int) -> int:
    return k.gid


@syscall("umask")
def sys_umask(k: Kernel, mask: int) -> int:
    old, k.umask = k.umask, mask & 0o777
    return old
