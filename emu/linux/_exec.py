"""``execve`` and ``execveat``: a process runs a new program (fs/exec.c).

The program is found through the process's file view (a denied path is
``EACCES``, as for ``open``), read by the same loader as ``Machine.from_elf``
(:func:`emu._elf.exec_image`) into a fresh :class:`~emu.Machine`, and the
process moves there: same pid and tid, the calling thread only (``de_thread``:
the others end), the descriptors but those marked close-on-exec, signal
actions back to default but the ignored ones (``flush_signal_handlers``), the
mask and pending signals kept; a thread other than the leader takes the
leader's id. A ``#!`` script runs its interpreter with the
optional argument, then the script's path, then the rest of argv
(fs/binfmt_script.c), at most :data:`BINPRM_MAX_RECURSION` deep. Probes follow
(``Machine.on_exec``). A ``vfork`` parent waiting for this process goes on.

Errors as Linux: ``ENOENT`` (no such file, or its ``PT_INTERP`` is missing),
``EACCES`` (denied, not a regular file, not executable), ``ENOEXEC`` (not a
program this machine runs), ``E2BIG`` (arguments past ``ARG_MAX``), ``ELOOP``.
Before the point of no return the calling process is untouched.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING

from .._errors import LoadError
from ._files import HostFile
from ._futex import FutexTable
from ._kernel import Kernel
from ._process import CHILD_TCG_BUFFER, host_has_room
from ._registry import KernelError, s32, syscall
from ._signal import SIG_IGN, SigAction, ThreadSignals, thread_signals
from ._sys_path import AT_EMPTY_PATH, AT_FDCWD, resolve

if TYPE_CHECKING:
    from .._machine import Machine

__all__ = ["BINPRM_MAX_RECURSION"]

BINPRM_MAX_RECURSION = 4          # include/linux/binfmts.h
BINPRM_BUF_SIZE = 256
MAX_ARG_STRLEN = 32 * 4096        # one argument or variable (include/uapi/linux/binfmts.h)
ARG_MAX = 2 << 20                 # all of argv and envp (a quarter of an 8 MiB stack)
MAX_ARG_STRINGS = 0x7FFFFFFF
_U64 = struct.Struct("<Q")


@syscall("execve")
def sys_execve(k: Kernel, filename: int, argv: int, envp: int) -> int:
    return _execve(k, AT_FDCWD, filename, argv, envp, 0)


@syscall("execveat")
def sys_execveat(k: Kernel, dirfd: int, filename: int, argv: int, envp: int, flags: int) -> int:
    return _execve(k, dirfd, filename, argv, envp, flags)


def _execve(k: Kernel, dirfd: int, filename: int, argv_addr: int, envp_addr: int, flags: int) -> int:
    path = k.read_str(filename) if filename else ""
    argv = _strings(k, argv_addr)
    envp = _strings(k, envp_addr)
    if sum(len(a) + 1 for a in argv + envp) > ARG_MAX:
        raise KernelError(errno.E2BIG)
    if not path and flags & AT_EMPTY_PATH:
        f = k.files[s32(dirfd)]
        if not isinstance(f, HostFile):
            raise KernelError(errno.EACCES)
        host, shown = f.realpath, f.path
    else:
        host, shown = _find(k, dirfd, path), path
    for _depth in range(BINPRM_MAX_RECURSION + 1):
        script = _script_line(host)
        if script is None:
            break
        interp, arg = script
        argv = [os.fsencode(interp), *([os.fsencode(arg)] if arg else []), os.fsencode(shown), *argv[1:]]
        host, shown = _find(k, AT_FDCWD, interp), interp
    else:
        raise KernelError(errno.ELOOP)
    _replace_image(k, host, shown, argv, envp)
    return 0


def _strings(k: Kernel, addr: int) -> list[bytes]:
    """A NULL-terminated guest array of strings (argv, envp), bounded as Linux."""
    out: list[bytes] = []
    if not addr:
        return out
    total = 0
    while True:
        ptr = _U64.unpack(k.read(addr + 8 * len(out), 8))[0]
        if not ptr:
            return out
        s = os.fsencode(k.read_str(ptr, MAX_ARG_STRLEN))
        total += len(s) + 1
        if total > ARG_MAX or len(out) >= MAX_ARG_STRINGS:
            raise KernelError(errno.E2BIG)
        out.append(s)


def _find(k: Kernel, dirfd: int, path: str) -> str:
    """The host path of a program the process may run (``do_open_execat``)."""
    if not path:
        raise KernelError(errno.ENOENT)
    real = resolve(k, dirfd, path)
    if not os.path.exists(real):
        raise KernelError(errno.ENOENT)
    if not os.path.isfile(real) or not os.access(real, os.X_OK):
        raise KernelError(errno.EACCES)
    return real


def _script_line(host: str) -> tuple[str, str] | None:
    """``(interpreter, optional argument)`` of a ``#!`` script, else None."""
    try:
        with open(host, "rb") as f:
            head = f.read(BINPRM_BUF_SIZE)
    except OSError as exc:
        raise KernelError(exc.errno or errno.EACCES) from None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip(b" \t")
    if not line:
        raise KernelError(errno.ENOEXEC)
    interp, _, arg = line.partition(b" ") if b" " in line else line.partition(b"\t")
    return os.fsdecode(interp), os.fsdecode(arg.strip(b" \t"))


def _replace_image(k: Kernel, host: str, shown: str, argv: list[bytes], envp: list[bytes]) -> None:
    from .._elf import exec_image
    old = k.m
    if not host_has_room(CHILD_TCG_BUFFER + (64 << 20)):
        raise KernelError(errno.ENOMEM)
    nm = _fresh_machine(k, old)
    try:
        mm, entry = exec_image(nm, host, argv, envp, k.fs, k.rng.randbytes(16), k.uid, k.gid,
                               os.path.normpath(os.path.join(k.cwd, shown)))
    except LoadError as exc:
        k.report(f"execve {shown!r}: {exc}")
        raise KernelError(errno.ENOENT if "not found" in str(exc) else errno.ENOEXEC) from None
    # --- the point of no return -------------------------------------------------------------
    sched = old.sched
    task = old.current_task
    for t in k.threads:
        if t is not task:
            k.futexes.forget(t)
            if sched is not None:
                sched.finish(t, None)
    if task in old.tasks:
        old.tasks.remove(task)
    fresh = nm.tasks[0]
    task.stack, task.context, task.machine = fresh.stack, fresh.context, nm
    task.comm = os.path.basename(shown)[:15]
    task.clear_child_tid = 0
    task.tid = k.pid                    # de_thread: a non-leader takes the leader's id
    nm.tasks = [task]
    nm.set_current_task(task)
    ts = thread_signals(task)
    task.signal = ThreadSignals(mask=ts.mask, pending=ts.pending)
    k.signals.actions = {sig: SigAction(handler=SIG_IGN) for sig, act in k.signals.actions.items()
                         if act.handler == SIG_IGN}
    k.files.close_on_exec()
    k.m, k.mem, k.cpu, k.mm = nm, nm.mem, nm.cpu, mm
    k.threads = [task]
    k.futexes = FutexTable()
    k.exe_path = host
    k.entry = entry
    nm.kernel = k
    k.world.adopt(nm)
    k.install()
    if not any(p.m is old for p in k.world.live()):
        k.world._dead.append(old)
    k.world.wake_vfork_parent(k)
    for fn in list(old.on_exec):
        fn(old, nm)
    if sched is not None:
        sched.end_slice_now()


def _fresh_machine(k: Kernel, old: Machine) -> Machine:
    from .._machine import Machine
    nm = Machine(max_insns=old.max_insns, timeout=old.timeout, mem_limit=old.mem.limit,
                 tcg_buffer_size=CHILD_TCG_BUFFER)
    # While it loads, the old image still counts, unless a vfork parent shares it.
    shared = any(p.m is old for p in k.world.live() if p is not k)
    nm.mem.others = lambda: k.world.mapped_except(nm) - (0 if shared else old.mem.mapped)
    nm.seed, nm.timeslice, nm.exact_clock = old.seed, old.timeslice, old.exact_clock
    nm.stdout, nm.stderr = old.stdout, old.stderr
    nm.unknown_syscalls = old.unknown_syscalls
    nm.next_tid = old.next_tid
    nm.on_fork, nm.on_exec, nm.on_pause = old.on_fork, old.on_exec, old.on_pause
    nm.clock = old.clock
    nm.sched = old.sched
    nm._depth = old._depth
    return nm
