"""Processes: ``fork``, ``vfork``, ``clone`` of a new process, ``wait4``, ``waitid``,
the ids (``execve``: :mod:`._exec`).

A child process (kernel/fork.c ``copy_process`` without ``CLONE_THREAD``) gets
its own pid, a copy of the file table (the open files shared, as after
``dup``), of the signal actions, cwd and umask, and:
- without ``CLONE_VM`` (``fork``): its own :class:`~emu.Machine` holding a copy
  of the parent's address space (only the pages the parent touched are copied,
  :meth:`emu._memory.Memory.copy_from`), its symbols and its mapped objects;
  probes follow through ``Machine.on_fork`` (the kernel's ``uprobe_dup_mmap``);
- with ``CLONE_VM`` (``vfork``, ``posix_spawn``'s ``CLONE_VM|CLONE_VFORK``): the
  parent's machine itself, shared until the child execs or exits; with
  ``CLONE_VFORK`` the parent waits for that (``wait_for_vfork_done``).
The child resumes after the ``syscall`` with rax 0, on ``newsp`` if given.

``wait4``/``waitid`` (kernel/exit.c ``do_wait``) reap the first child that
ended; with none ended and ``WNOHANG`` unset they wait (:mod:`._wait`). The
status word is ``exit_code << 8``, or the signal number (``WIFSIGNALED``).
"""

from __future__ import annotations

import copy
import errno
import random
import struct
from typing import TYPE_CHECKING, TypeVar

from .._task import Task
from ._futex import FutexTable
from ._kernel import Kernel
from ._mm import AddressSpace
from ._process import CHILD_TCG_BUFFER, CLD_EXITED, CLD_KILLED
from ._registry import KernelError, s32, syscall
from ._rlimit import inherit_rlimits
from ._signal import ProcessSignals
from ._sys_thread import (
    CLONE_THREAD,
    CLONE_VFORK,
    CLONE_VM,
    child_context,
    child_task_setup,
    new_thread,
)
from ._wait import block_on

if TYPE_CHECKING:
    from .._machine import Machine
    from .._sched import Scheduler

# include/uapi/linux/wait.h
WNOHANG, WUNTRACED, WEXITED, WCONTINUED, WNOWAIT = 1, 2, 4, 8, 0x1000000
P_ALL, P_PID, P_PGID = 0, 1, 2
_SIGCHLD = 17
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_SIGINFO_SIZE = 128


def _sched(k: Kernel) -> Scheduler:
    sched = k.m.sched
    if sched is None:           # a call() into the program: one task, no scheduler
        raise KernelError(errno.EAGAIN)
    return sched


# --- creating a process ----------------------------------------------------------------------------
@syscall("clone")
def sys_clone(k: Kernel, flags: int, newsp: int, ptid: int, ctid: int, tls: int) -> int:
    if flags & CLONE_THREAD:
        return new_thread(k, flags, newsp, ptid, ctid, tls)
    return new_process(k, flags, newsp, ptid, ctid, tls)


@syscall("fork")
def sys_fork(k: Kernel) -> int:
    return new_process(k, _SIGCHLD, 0, 0, 0, 0)


@syscall("vfork")
def sys_vfork(k: Kernel) -> int:
    return new_process(k, CLONE_VM | CLONE_VFORK | _SIGCHLD, 0, 0, 0, 0)


def new_process(k: Kernel, flags: int, newsp: int, ptid: int, ctid: int, tls: int) -> int:
    sched = _sched(k)
    parent_m = k.m
    parent_task = parent_m.current_task
    k.world.release_dead(sched.running)
    k.world.check_room(parent_m, copy=not flags & CLONE_VM)
    if flags & CLONE_VM:
        m = parent_m
        stack = m.mem.region_at(newsp - 1) if newsp else None
        task = m.add_task(stack if stack is not None else parent_task.stack, parent_task.name)
    else:
        m = _copy_machine(parent_m)
        stack = m.mem.region_at(parent_task.stack.start)
        assert stack is not None
        task = Task(k.world.next_tid(), stack, parent_task.name, machine=m)
        m.tasks = [task]
        m.set_current_task(task)
    task.comm = parent_task.comm
    child = _child_kernel(k, m, task)
    task.context = child_context(parent_m, flags, newsp, tls)
    child_task_setup(k, child, task, parent_task, flags, ptid, ctid)
    sched.add(task)
    if m is not parent_m:
        for fn in list(parent_m.on_fork):
            fn(parent_m, m)
    if flags & CLONE_VFORK:
        child.vfork_parent = parent_task
        sched.block(parent_task, f"vfork of {task.pid}")
        parent_task.wake_value = task.pid
    elif not sched.sliced:
        sched.yield_now()           # two tasks now: slices from here on
    return task.pid


def _child_kernel(k: Kernel, m: Machine, task: Task) -> Kernel:
    """``copy_process``'s copies: files, signal actions, cwd, umask, ids."""
    child = copy.copy(k)                # then every per-process field made its own
    child.m, child.mem, child.cpu = m, m.mem, m.cpu
    child.pid = task.tid
    child.pgid = k.pgid
    child.ppid = k.pid
    child.parent = k
    child.children = []
    child.threads = [task]
    child.rng = random.Random(k.rng.getrandbits(64))
    child.futexes = FutexTable()
    child.files = k.files.fork()
    child.signals = ProcessSignals(child)
    child.signals.actions = dict(k.signals.actions)
    child.exited = None
    child.reaped = False
    child.exit_order = 0
    child.vfork_parent = None
    from ._wait import WaitQueue
    child.child_wait = WaitQueue()
    child._host_errors = set()
    inherit_rlimits(k, child)
    if m is not k.m:
        k.world.adopt(m)
        child.mm = _copy_mm(k.mm, m)
        m.kernel = child
        child.install()
    task.process = child
    k.children.append(child)
    k.world.add(child)
    return child


def _copy_mm(mm: AddressSpace, m: Machine) -> AddressSpace:
    new = copy.copy(mm)
    new.mem = m.mem
    return new


def _copy_machine(p: Machine) -> Machine:
    """A new machine with a copy of ``p``'s address space, symbols and settings."""
    from .._machine import Machine
    c = Machine(max_insns=p.max_insns, timeout=p.timeout, mem_limit=p.mem.limit,
                tcg_buffer_size=CHILD_TCG_BUFFER)
    c.mem.unmap(c.tasks[0].stack)
    c.mem.others = p.mem.others             # the run's one limit (set for good by adopt)
    c.mem.copy_from(p.mem, skip=lambda r: r.start == p.exit_address)
    c.symbols = _copy_fields(p.symbols)
    c.objects = _copy_fields(p.objects)
    c.on_exec = p.on_exec
    c.objects._symbols = c.symbols
    c.objects.on_mapped = []
    c.on_object_mapped = c.objects.on_mapped
    c.seed, c.timeslice, c.exact_clock = p.seed, p.timeslice, p.exact_clock
    c.stdout, c.stderr = p.stdout, p.stderr
    c.unknown_syscalls = p.unknown_syscalls
    c.next_tid = p.next_tid
    c.on_fork = p.on_fork               # one list for the whole run: probes follow every process
    c.on_pause = p.on_pause
    c.clock = p.clock
    c.sched = p.sched
    c._depth = p._depth
    return c


_T = TypeVar("_T")


def _copy_fields(obj: _T) -> _T:
    """A shallow copy whose list, dict and set attributes are copies too."""
    new = copy.copy(obj)
    for name, value in vars(obj).items():
        if isinstance(value, dict):
            setattr(new, name, copy.deepcopy(value) if name == "_partial" else dict(value))
        elif isinstance(value, list | set):
            setattr(new, name, copy.copy(value))
    return new


# --- waiting for children ----------------------------------------------------------------------------
def _matching(k: Kernel, idtype: int, ident: int) -> list[Kernel]:
    if idtype == P_PID:
        return [c for c in k.children if c.pid == ident]
    if idtype == P_PGID:
        return [c for c in k.children if c.pgid == ident]
    return list(k.children)


def _wait(k: Kernel, idtype: int, ident: int, options: int, what: str) -> Kernel | None:
    """The first ended child matching, reaped unless ``WNOWAIT``; None with
    ``WNOHANG`` and nothing ended yet; else the call waits.

    Raises:
        KernelError: ``ECHILD``, no such child.
    """
    sched = k.m.sched
    k.world.release_dead(sched.running if sched is not None else k.m)
    children = _matching(k, idtype, ident)
    if not children:
        raise KernelError(errno.ECHILD)
    ended = sorted((c for c in children if c.exited is not None), key=lambda c: c.exit_order)
    if ended:
        child = ended[0]
        if not options & WNOWAIT:
            k.children.remove(child)
            child.reaped = True
        return child
    if options & WNOHANG:
        return None
    block_on(k, what, [k.child_wait])
    return None                                     # pragma: no cover - block_on raises


def _status(child: Kernel) -> int:
    done = child.exited
    assert done is not None
    return done.signal & 0x7F if done.signal else (done.status & 0xFF) << 8


@syscall("wait4")
def sys_wait4(k: Kernel, pid: int, wstatus: int, options: int, rusage: int) -> int:
    pid = s32(pid)
    if options & ~(WNOHANG | WUNTRACED | WCONTINUED | 0x40000000 | 0x80000000 | 0x20000000):
        raise KernelError(errno.EINVAL)
    idtype, ident = (P_PID, pid) if pid > 0 else (P_PGID, k.pgid) if pid == 0 else \
        (P_ALL, 0) if pid == -1 else (P_PGID, -pid)
    child = _wait(k, idtype, ident, options, "wait4")
    if child is None:
        return 0
    if wstatus:
        k.write(wstatus, _I32.pack(_status(child)))
    if rusage:
        k.write(rusage, bytes(144))                 # sizeof(struct rusage): nothing measured
    return child.pid


@syscall("waitid")
def sys_waitid(k: Kernel, idtype: int, ident: int, infop: int, options: int) -> int:
    idtype = s32(idtype)
    if idtype not in (P_ALL, P_PID, P_PGID) or not options & WEXITED:
        raise KernelError(errno.EINVAL)
    child = _wait(k, idtype, s32(ident), options, "waitid")
    if infop:
        info = bytearray(_SIGINFO_SIZE)
        if child is not None:
            done = child.exited
            assert done is not None
            code = CLD_KILLED if done.signal else CLD_EXITED
            value = done.signal if done.signal else done.status & 0xFF
            struct.pack_into("<iii4xiIi", info, 0, _SIGCHLD, 0, code, child.pid, child.uid, value)
        k.write(infop, bytes(info))
    return 0


# --- ids ----------------------------------------------------------------------------------------------
@syscall("getppid")
def sys_getppid(k: Kernel) -> int:
    return k.ppid


@syscall("getpgrp")
def sys_getpgrp(k: Kernel) -> int:
    return k.pgid


@syscall("getpgid", "getsid")
def sys_getpgid(k: Kernel, pid: int) -> int:
    pid = s32(pid)
    target = k if pid == 0 else k.world.find(pid)
    if target is None:
        raise KernelError(errno.ESRCH)
    return target.pgid


@syscall("setpgid")
def sys_setpgid(k: Kernel, pid: int, pgid: int) -> int:
    pid, pgid = s32(pid), s32(pgid)
    if pgid < 0:
        raise KernelError(errno.EINVAL)
    target = k if pid in (0, k.pid) else next((c for c in k.children if c.pid == pid), None)
    if target is None:
        raise KernelError(errno.ESRCH)
    target.pgid = pgid or target.pid
    return 0


@syscall("setsid")
def sys_setsid(k: Kernel) -> int:
    k.pgid = k.pid
    return k.pid
