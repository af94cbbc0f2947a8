"""Process system calls: identity, TLS, signals (threads: :mod:`._sys_thread`).

One process, no signal delivery: handlers are recorded by
``rt_sigaction`` but never run. A signal the process sends itself (``abort()``
raising ``SIGABRT``) ends it as the default action would, unless it is ignored.
"""

from __future__ import annotations

import errno
import struct

from .._regtable import MASK64
from ._kernel import Kernel
from ._registry import KernelError, s32, syscall

# arch/x86/include/uapi/asm/prctl.h
ARCH_SET_GS, ARCH_SET_FS, ARCH_GET_FS, ARCH_GET_GS = 0x1001, 0x1002, 0x1003, 0x1004
_ARCH_SEGMENT = {ARCH_SET_FS: "fs_base", ARCH_GET_FS: "fs_base",
                 ARCH_SET_GS: "gs_base", ARCH_GET_GS: "gs_base"}
# Signals whose default action is to ignore them (kernel/signal.c: SIG_KERNEL_IGNORE_MASK).
SIGCHLD, SIGCONT, SIGURG, SIGWINCH = 17, 18, 23, 28
_DEFAULT_IGNORED = frozenset({SIGCHLD, SIGCONT, SIGURG, SIGWINCH})
SIG_IGN = 1
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
_NSIG = 64
_SIGACTION_SIZE = 32        # handler, flags, restorer, mask (struct kernel_sigaction)
_SIGSET_SIZE = 8


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
    return 0o022


@syscall("pause")
def sys_pause(k: Kernel) -> int:
    """Signals are not delivered: report an interruption rather than sleep forever."""
    raise KernelError(errno.EINTR)


# --- signals -----------------------------------------------------------------------------
def _signo(sig: int) -> int:
    sig = s32(sig)
    if not 1 <= sig <= _NSIG:
        raise KernelError(errno.EINVAL)
    return sig


@syscall("rt_sigaction")
def sys_rt_sigaction(k: Kernel, sig: int, act: int, oldact: int, sigsetsize: int) -> int:
    sig = _signo(sig)
    if sigsetsize != _SIGSET_SIZE or (act and sig in (9, 19)):   # SIGKILL, SIGSTOP
        raise KernelError(errno.EINVAL)
    old = k.sigactions.get(sig, bytes(_SIGACTION_SIZE))
    if act:
        k.sigactions[sig] = k.read(act, _SIGACTION_SIZE)
    if oldact:
        k.write(oldact, old)
    return 0


@syscall("rt_sigprocmask")
def sys_rt_sigprocmask(k: Kernel, how: int, nset: int, oset: int, sigsetsize: int) -> int:
    if sigsetsize != _SIGSET_SIZE:
        raise KernelError(errno.EINVAL)
    old = k.sigmask
    if nset:
        (value,) = struct.unpack("<Q", k.read(nset, 8))
        how = s32(how)
        if how == SIG_BLOCK:
            k.sigmask |= value
        elif how == SIG_UNBLOCK:
            k.sigmask &= ~value & MASK64
        elif how == SIG_SETMASK:
            k.sigmask = value
        else:
            raise KernelError(errno.EINVAL)
    if oset:
        k.write(oset, struct.pack("<Q", old))
    return 0


@syscall("sigaltstack")
def sys_sigaltstack(k: Kernel, ss: int, old_ss: int) -> int:
    if old_ss:
        k.write(old_ss, struct.pack("<QiiQ", 0, 2, 0, 0))     # SS_DISABLE
    return 0


def _send_self(k: Kernel, sig: int) -> int:
    if sig == 0:
        return 0
    sig = _signo(sig)
    handler = struct.unpack_from("<Q", k.sigactions.get(sig, bytes(8)))[0]
    if handler == SIG_IGN or (handler == 0 and sig in _DEFAULT_IGNORED):
        return 0
    if handler != 0:
        k.report(f"signal {sig} has a handler, but signal delivery is not emulated: "
                 f"the process ends as by the default action")
    k.exit(128 + sig, sig)
    return 0


@syscall("kill")
def sys_kill(k: Kernel, pid: int, sig: int) -> int:
    if s32(pid) not in (0, -1, k.pid):
        raise KernelError(errno.ESRCH)
    return _send_self(k, sig)


@syscall("tgkill")
def sys_tgkill(k: Kernel, tgid: int, tid: int, sig: int) -> int:
    if s32(tgid) != k.pid or s32(tid) != k.m.current_task.tid:
        raise KernelError(errno.ESRCH)
    return _send_self(k, sig)


@syscall("tkill")
def sys_tkill(k: Kernel, tid: int, sig: int) -> int:
    if s32(tid) != k.m.current_task.tid:
        raise KernelError(errno.ESRCH)
    return _send_self(k, sig)
