"""The processes of one run: pids, parents and children, exits and zombies.

A run starts with one process (the program ``Machine.from_elf`` loaded), which
is the init of the run's PID namespace: its children and every orphan are its
to reap, and when it exits every other process is killed (``zap_pid_ns_processes``)
and the run ends with its status. A process is its :class:`~emu.linux.Kernel`
(pid, file table, signal actions, cwd) plus a :class:`~emu.Machine` (the address
space; a ``vfork`` child borrows its parent's until it execs) plus its threads,
tasks of the run's one scheduler. Every pid and tid of the run comes from one
counter, so they never collide.

Rules from kernel/exit.c: ``exit_notify`` (the parent gets ``SIGCHLD`` and its
``wait4`` wakes; the children of an exiting process are reparented to the
namespace's init, ``forget_original_parent``), ``release_task`` when reaped.
"""

from __future__ import annotations

import errno
import re
import resource
from typing import TYPE_CHECKING

from .._task import DONE
from ._registry import KernelError

if TYPE_CHECKING:
    from .._machine import Machine
    from ._kernel import Kernel

__all__ = ["ProcessTable", "CLD_EXITED", "CLD_KILLED"]

CLD_EXITED, CLD_KILLED = 1, 2          # include/uapi/asm-generic/siginfo.h
_SIGKILL = 9
# Host resources a process costs beyond its guest memory: an engine with its own
# translation buffer (the first machine keeps Unicorn's 1 GiB default).
MAX_PROCESSES = 128                     # live processes of a run; past it fork is EAGAIN
CHILD_TCG_BUFFER = 64 << 20             # translated code of another process's engine
_HOST_SLACK = 64 << 20                  # what an engine allocates besides that buffer


class ProcessTable:
    """Every process of one run, in creation order (``m.processes``)."""

    def __init__(self, root: Kernel) -> None:
        self.root = root
        self.all: list[Kernel] = [root]
        self._last = max(t.tid for t in root.m.tasks)
        root.m.next_tid = self.next_tid
        self._exits = 0
        self._dead: list[Machine] = []       # machines of ended processes, to release
        self.root_machine = root.m
        root.m.mem.others = lambda: self.mapped_except(root.m)

    def next_tid(self) -> int:
        """A new pid or tid, unique in the run."""
        self._last += 1
        return self._last

    def add(self, child: Kernel) -> None:
        self.all.append(child)

    def find(self, pid: int) -> Kernel | None:
        """The process ``pid``, alive or a zombie (not yet reaped)."""
        for k in self.all:
            if k.pid == pid and not k.reaped:
                return k
        return None

    def live(self) -> list[Kernel]:
        return [k for k in self.all if k.exited is None]

    def mapped_except(self, m: Machine) -> int:
        """Guest bytes the live processes' machines other than ``m`` hold: the
        run's processes share one ``mem_limit``."""
        if len(self.all) == 1:
            return 0
        return sum(x.mem.mapped for x in self.machines() if x is not m)

    def check_room(self, parent: Machine, copy: bool) -> None:
        """Refuse a new process the run or the host cannot afford, with the errno
        fork gives: ``EAGAIN`` past :data:`MAX_PROCESSES` (``RLIMIT_NPROC``),
        ``ENOMEM`` when a copy of ``parent`` would pass the run's ``mem_limit`` or
        a new engine would not fit the host's own address-space limit (Unicorn
        would abort the host process)."""
        if len(self.live()) >= MAX_PROCESSES:
            raise KernelError(errno.EAGAIN)
        if not copy:
            return
        if not parent.mem.fits(parent.mem.mapped):
            raise KernelError(errno.ENOMEM)
        if not host_has_room(CHILD_TCG_BUFFER + _HOST_SLACK + parent.mem.mapped):
            raise KernelError(errno.ENOMEM)

    def adopt(self, m: Machine) -> None:
        """A new machine of the run shares its memory limit."""
        m.mem.others = lambda: self.mapped_except(m)

    def machines(self) -> list[Machine]:
        """The machines of the live processes (each once)."""
        seen: dict[int, Machine] = {}
        for k in self.live():
            seen.setdefault(id(k.m), k.m)
        return list(seen.values())

    # --- a process ends ----------------------------------------------------------------
    def exited(self, k: Kernel) -> None:
        """``exit_notify`` for a process other than the first: it is a zombie now."""
        from ._signal import SIGCHLD, siginfo
        self._exits += 1
        k.exit_order = self._exits
        self.wake_vfork_parent(k)
        root = self.root
        orphans = [c for c in k.children]
        k.children = []
        for c in orphans:
            c.parent, c.ppid = root, root.pid
            root.children.append(c)
        if any(c.exited is not None for c in orphans):
            root.child_wait.wake_all()
        parent = k.parent
        assert parent is not None
        parent.child_wait.wake_all()
        assert k.exited is not None
        code = CLD_KILLED if k.exited.signal else CLD_EXITED
        parent.signals.send(SIGCHLD, siginfo(SIGCHLD, code, pid=k.pid, uid=k.uid))
        if not any(p.m is k.m for p in self.live()):
            self._dead.append(k.m)

    def wake_vfork_parent(self, k: Kernel) -> None:
        """The child of a ``vfork`` execs or exits: its parent's ``vfork`` returns."""
        waiter, k.vfork_parent = k.vfork_parent, None
        sched = k.m.sched
        if waiter is not None and sched is not None:
            sched.wake(waiter, k.pid)

    def end_all(self, root: Kernel) -> None:
        """The first process exits: every other one is killed (``SIGKILL``)."""
        from ._kernel import ProcessExit
        for k in self.live():
            if k is root:
                continue
            k.exited = ProcessExit(128 + _SIGKILL, _SIGKILL)
            k.files.close_all()
            sched = k.m.sched
            for task in k.threads:
                if sched is not None:
                    sched.finish(task, None)
                else:
                    task.state = DONE

    def release_dead(self, running: Machine | None) -> None:
        """Give back the memory and engines of ended processes' machines (not the
        one whose engine is running: it goes at a later call). The run's first
        machine, the caller's handle, keeps its engine; only its memory goes."""
        keep = []
        first = self.root_machine
        for m in self._dead:
            if m is running or any(p.m is m for p in self.live()):
                keep.append(m)
            elif m is first:
                for r in list(m.mem.regions):
                    if r.start != m.exit_address:
                        m.mem.unmap(r)
            else:
                for k in self.all:              # their last references to the engine
                    if k.m is m:
                        for name in ("cpu", "mem", "mm"):
                            if name in vars(k):
                                delattr(k, name)
                m.release()
        self._dead = keep


def host_has_room(size: int) -> bool:
    """Whether the host process may map ``size`` more bytes under its own
    ``RLIMIT_AS`` (no limit: yes)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return True
    try:
        with open("/proc/self/status") as f:
            found = re.search(r"VmSize:\s+(\d+) kB", f.read())
    except OSError:
        return True
    used = int(found.group(1)) << 10 if found else 0
    return used + size <= soft
