"""System calls programs ask in passing: sockets (refused), ``prctl``, ``mincore``,
``getpriority``/``setpriority``, ``getcpu``.

Sockets are not emulated: ``socket`` and ``socketpair`` fail with ``EACCES`` (as a
seccomp or LSM policy that forbids them would), said once per run in the
diagnostics log (kind ``socket``). No descriptor can then be a socket, so the
calls that take one fail as Linux fails them for any other file: ``EBADF`` for a
closed descriptor, else ``ENOTSOCK`` (``sockfd_lookup``).

Sources: ``net/socket.c`` (``__sys_socket``, ``sockfd_lookup_light``),
``kernel/sys.c`` (``SYSCALL_DEFINE5(prctl)``, ``getpriority``, ``setpriority``,
``getcpu``), ``mm/mincore.c``.
"""

from __future__ import annotations

import errno
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from .._memory import PAGE
from ._diag import NOTE, SOCKET
from ._kernel import Kernel
from ._mm import TASK_SIZE
from ._registry import KernelError, s32, syscall

# include/uapi/linux/prctl.h
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE = 1, 2, 3, 4
PR_SET_NAME, PR_GET_NAME, PR_GET_SECCOMP, PR_CAPBSET_READ = 15, 16, 21, 23
PR_GET_TIMERSLACK, PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 30, 36, 37
PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS = 38, 39
CAP_LAST_CAP = 40                   # CAP_CHECKPOINT_RESTORE
TASK_COMM_LEN = 16
TIMER_SLACK_NS = 50_000
_NSIG = 64
# include/uapi/linux/resource.h
PRIO_PROCESS, PRIO_PGRP, PRIO_USER = 0, 1, 2
_CHUNK = 1 << 20


@dataclass
class _ProcessFlags:
    """What ``prctl`` sets on a process (``task_struct``/``signal_struct`` bits)."""

    pdeathsig: int = 0
    dumpable: int = 1
    no_new_privs: int = 0
    subreaper: int = 0
    nice: int = 0


_FLAGS: weakref.WeakKeyDictionary[Kernel, _ProcessFlags] = weakref.WeakKeyDictionary()


def _flags(k: Kernel) -> _ProcessFlags:
    flags = _FLAGS.get(k)
    if flags is None:
        flags = _FLAGS[k] = _ProcessFlags()
    return flags


# --- sockets --------------------------------------------------------------------------
AF_UNIX = 1
_FAMILIES = {1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK", 17: "AF_PACKET"}


def _refuse_socket(k: Kernel, domain: int) -> None:
    """EACCES, said once per run: in the summary for a network socket; for a
    local one (the C library asks nscd for user names over AF_UNIX, and falls
    back quietly) only as a note for ``-v``."""
    family = _FAMILIES.get(domain & 0xFFFF_FFFF, f"family {domain & 0xFFFF_FFFF}")
    if domain & 0xFFFF_FFFF == AF_UNIX:
        k.report("a local socket (AF_UNIX) was refused (EACCES): sockets are not emulated", NOTE,
                 key="socket-local")
    else:
        k.report(f"a socket ({family}) was refused (EACCES): sockets are not emulated", SOCKET,
                 key="socket")
    raise KernelError(errno.EACCES)


@syscall("socket")
def sys_socket(k: Kernel, domain: int, kind: int, protocol: int) -> int:
    _refuse_socket(k, domain)
    return -1       # pragma: no cover - _refuse_socket raises


@syscall("socketpair")
def sys_socketpair(k: Kernel, domain: int, kind: int, protocol: int, sv: int) -> int:
    _refuse_socket(k, domain)
    return -1       # pragma: no cover


@syscall("connect", "bind", "listen", "accept", "accept4", "getsockname", "getpeername",
         "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown", "setsockopt", "getsockopt",
         "sendmmsg", "recvmmsg")
def sys_socket_op(k: Kernel, fd: int) -> int:
    """Every open descriptor is something else than a socket."""
    k.files[s32(fd)]
    raise KernelError(errno.ENOTSOCK)


# --- prctl ----------------------------------------------------------------------------
@syscall("prctl")
def sys_prctl(k: Kernel, option: int, arg2: int, arg3: int, arg4: int, arg5: int) -> int:
    """The options programs use; the rest (``PR_SET_VMA`` among them: a kernel
    without ``CONFIG_ANON_VMA_NAME``) are ``EINVAL``."""
    option = s32(option)
    handler = _PRCTL.get(option)
    if handler is None:
        raise KernelError(errno.EINVAL)
    return handler(k, arg2, arg3, arg4, arg5)


def _set_pdeathsig(k: Kernel, sig: int, *_: int) -> int:
    if not 0 <= sig <= _NSIG:
        raise KernelError(errno.EINVAL)
    _flags(k).pdeathsig = sig
    return 0


def _get_pdeathsig(k: Kernel, addr: int, *_: int) -> int:
    k.write(addr, _flags(k).pdeathsig.to_bytes(4, "little"))
    return 0


def _set_dumpable(k: Kernel, value: int, *_: int) -> int:
    if value not in (0, 1):                 # SUID_DUMP_USER at most
        raise KernelError(errno.EINVAL)
    _flags(k).dumpable = value
    return 0


def _set_name(k: Kernel, addr: int, *_: int) -> int:
    """The calling thread's ``comm``: at most 15 bytes (``TASK_COMM_LEN`` - 1)."""
    raw = k.read(addr, TASK_COMM_LEN)
    name = raw[:TASK_COMM_LEN - 1].split(b"\0", 1)[0]
    k.m.current_task.comm = name.decode("utf-8", errors="surrogateescape")
    return 0


def _get_name(k: Kernel, addr: int, *_: int) -> int:
    comm = k.m.current_task.comm.encode("utf-8", errors="surrogateescape")[:TASK_COMM_LEN - 1]
    k.write(addr, comm.ljust(TASK_COMM_LEN, b"\0"))
    return 0


def _capbset_read(k: Kernel, cap: int, *_: int) -> int:
    if not 0 <= cap <= CAP_LAST_CAP:
        raise KernelError(errno.EINVAL)
    return 1                                # an unprivileged user's full bounding set


def _set_no_new_privs(k: Kernel, value: int, arg3: int, arg4: int, arg5: int) -> int:
    if value != 1 or arg3 or arg4 or arg5:
        raise KernelError(errno.EINVAL)
    _flags(k).no_new_privs = 1
    return 0


def _set_subreaper(k: Kernel, value: int, *_: int) -> int:
    _flags(k).subreaper = int(bool(value))
    return 0


def _get_subreaper(k: Kernel, addr: int, *_: int) -> int:
    k.write(addr, _flags(k).subreaper.to_bytes(4, "little"))
    return 0


_PRCTL: dict[int, Callable[..., int]] = {
    PR_SET_PDEATHSIG: _set_pdeathsig,
    PR_GET_PDEATHSIG: _get_pdeathsig,
    PR_GET_DUMPABLE: lambda k, *_: _flags(k).dumpable,
    PR_SET_DUMPABLE: _set_dumpable,
    PR_SET_NAME: _set_name,
    PR_GET_NAME: _get_name,
    PR_GET_SECCOMP: lambda k, *_: 0,
    PR_CAPBSET_READ: _capbset_read,
    PR_GET_TIMERSLACK: lambda k, *_: TIMER_SLACK_NS,
    PR_SET_CHILD_SUBREAPER: _set_subreaper,
    PR_GET_CHILD_SUBREAPER: _get_subreaper,
    PR_SET_NO_NEW_PRIVS: _set_no_new_privs,
    PR_GET_NO_NEW_PRIVS: lambda k, *_: _flags(k).no_new_privs,
}


# --- mincore --------------------------------------------------------------------------
@syscall("mincore")
def sys_mincore(k: Kernel, start: int, length: int, vec: int) -> int:
    """Every mapped page is resident (1); ``ENOMEM`` when the range is not all
    mapped. One byte a page, written a bounded chunk at a time."""
    if start % PAGE:
        raise KernelError(errno.EINVAL)
    if length > TASK_SIZE or start > TASK_SIZE - length:
        raise KernelError(errno.ENOMEM)
    pages = (length + PAGE - 1) // PAGE
    if k.mem.span(start, pages * PAGE) < pages * PAGE:
        raise KernelError(errno.ENOMEM)
    for done in range(0, pages, _CHUNK):
        k.write(vec + done, b"\1" * min(_CHUNK, pages - done))
    return 0


# --- priority, CPU ----------------------------------------------------------------------
def _check_who(k: Kernel, which: int, who: int) -> None:
    """The process itself, its group, its user; nobody else exists (``ESRCH``)."""
    if which not in (PRIO_PROCESS, PRIO_PGRP, PRIO_USER):
        raise KernelError(errno.EINVAL)
    own = k.uid if which == PRIO_USER else k.pid
    if who not in (0, own) and not (which == PRIO_PROCESS and any(t.tid == who for t in k.threads)):
        raise KernelError(errno.ESRCH)


@syscall("getpriority")
def sys_getpriority(k: Kernel, which: int, who: int) -> int:
    """The raw syscall returns ``20 - nice`` (1..40), never negative; the C
    library turns it back."""
    _check_who(k, s32(which), s32(who))
    return 20 - _flags(k).nice


@syscall("setpriority")
def sys_setpriority(k: Kernel, which: int, who: int, prio: int) -> int:
    """Nice clamped to -20..19; lowering it below the current value needs
    ``RLIMIT_NICE`` (0 here): ``EACCES`` (``can_nice``)."""
    _check_who(k, s32(which), s32(who))
    nice = min(max(s32(prio), -20), 19)
    if nice < _flags(k).nice:
        raise KernelError(errno.EACCES)
    _flags(k).nice = nice
    return 0


@syscall("getcpu")
def sys_getcpu(k: Kernel, cpu: int, node: int) -> int:
    for addr in (cpu, node):
        if addr:
            k.write(addr, bytes(4))         # CPU 0, NUMA node 0
    return 0
