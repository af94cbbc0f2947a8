"""The syscall layer of one guest process: state, the ``syscall`` hook, dispatch.

The ``syscall`` instruction reaches :meth:`Kernel._on_syscall` through a Unicorn
``UC_HOOK_INSN`` hook added with a raw ctypes callback. Unicorn calls it with
RIP on the ``syscall`` instruction and advances RIP past it afterwards. The
number is in rax, the arguments in rdi, rsi, rdx, r10, r8, r9, the result goes
to rax; like the kernel's ``entry_SYSCALL_64``, rcx gets the return address and
r11 the flags. Handlers live in ``_sys_*.py`` modules and register in
:data:`emu.linux._registry.SYSCALLS`; an unknown number returns ``-ENOSYS`` and is
reported once.

No Python exception leaves a system call (the kernel never panics on a user's
arguments): a handler's :class:`KernelError` is its ``-errno``; a host error it
let through becomes the errno Linux gives for that kind of failure (an
``OSError`` its own; :data:`_HOST_ERRNO` for the rest, each reported once as an
emulator bug). What stops the run on purpose passes: ``ProcessExit``, an
:class:`EmuError` (a fault, a limit), anything raised by a client's callback
the syscall layer called (a probe registered when a library is mapped),
``KeyboardInterrupt``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
import struct
import sysconfig
from typing import TYPE_CHECKING, Any

import unicorn
from unicorn import UcError
from unicorn import unicorn_const as _uc
from unicorn.x86_const import UC_X86_INS_SYSCALL

from .._errors import EmuError
from .._regtable import MASK64, R8, R9, R10, R11, RAX, RCX, RDI, RDX, RIP, RSI
from .._task import Task
from ._diag import DENIED, EMULATOR_ERROR, NOTE, UNKNOWN_SYSCALL, Diagnostics
from ._files import FdTable, InputFile, OutputFile
from ._fs import FsPolicy
from ._futex import FutexTable
from ._mm import AddressSpace
from ._process import ProcessTable
from ._registry import SYSCALLS, KernelError
from ._signal import ProcessSignals
from ._sysnr import SYSCALL_NAMES
from ._wait import Blocked, WaitQueue

if TYPE_CHECKING:
    from .._machine import Machine

__all__ = ["Kernel", "ProcessExit"]

HOOK_INSN_SYSCALL_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
UID = GID = 1000

# Host exceptions a handler let through, and what the guest gets instead (first
# match; OSError carries its own errno): a guest number the host cannot take is
# an invalid argument, a value too large for the guest's field an overflow.
_HOST_ERRNO: tuple[tuple[type[Exception], int], ...] = (
    (MemoryError, errno.ENOMEM),
    (UcError, errno.EFAULT),
    (OverflowError, errno.EINVAL),
    (struct.error, errno.EOVERFLOW),
    (UnicodeError, errno.EINVAL),
    (ValueError, errno.EINVAL),
)
_OTHER_ERRNO = errno.EINVAL
# Code that is the syscall layer's own (or what it calls): the emulator, the
# standard library, installed libraries. A frame elsewhere is a client's: a
# callback (see _raised_in_callback) or a handler a user registered.
_OWN_CODE = tuple(os.path.join(os.path.realpath(p), "") for p in {
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"],
    sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
    os.path.dirname(os.path.dirname(os.path.abspath(unicorn.__file__))),
    os.path.dirname(os.path.abspath(os.__file__)),
})


class ProcessExit(Exception):
    """Raised through the engine when the guest process ends (not an error).

    Attributes:
        status: what :meth:`Machine.run` returns: the exit code (0..255), or
            128 + the signal number when a signal ended the process.
        signal: the terminating signal, or 0.
    """

    def __init__(self, status: int, signal: int = 0) -> None:
        super().__init__(status)
        self.status = status
        self.signal = signal


class Kernel:
    """One guest process's kernel state.

    Attributes:
        m: the machine (memory, registers, objects, standard streams).
        files: the descriptor table; 0, 1, 2 are the standard streams.
        mm: the address space (``brk``, ``mmap``).
        fs: the file access policy.
        exe_path: the executable as the guest knows it (``/proc/self/exe``).
        entry: where the process starts (the interpreter's entry when there is one).
        context: the process's registers while it is not running (Unicorn context).
        signals: actions, the shared queue and the timer (:mod:`._signal`); each
            thread's mask and queue live with its task.
        denied: host paths the policy refused, in order, each once.
    """

    def __init__(self, m: Machine, fs: FsPolicy, mm: AddressSpace, *, stdin: bytes = b"",
                 exe_path: str = "", seed: int = 0, diagnostics: Diagnostics | None = None) -> None:
        self.m = m
        self.mem = m.mem
        self.cpu = m.cpu
        self.fs = fs
        self.mm = mm
        self.exe_path = exe_path
        self.cwd = fs.cwd
        self.entry = 0
        self.rng = random.Random(seed)
        self.pid = m.tasks[0].tid          # the main thread's tid, as in Linux
        self.ppid = 0                      # the first process of a run has no parent (PID 1's)
        self.umask = 0o022
        m.tasks[0].process = self
        self.threads: list[Task] = [m.tasks[0]]     # the thread group, leader first
        self.futexes = FutexTable()
        self.uid, self.gid = UID, GID
        self.files = FdTable()
        self.files.install(InputFile(stdin), 0)
        self.files.install(OutputFile("pipe:[stdout]", lambda: m.stdout), 1)
        self.files.install(OutputFile("pipe:[stderr]", lambda: m.stderr), 2)
        self.signals = ProcessSignals(self)
        self.denied: list[str] = []
        # Shared by every process of the run (a child inherits its parent's).
        self.diagnostics = diagnostics if diagnostics is not None else Diagnostics()
        self.exited: ProcessExit | None = None
        # Processes (emu.linux._process): the run's table, the parent (None: the
        # run's first process, PID 1 of its namespace), the children not reaped,
        # who waits for them, and a vfork parent waiting for this one's exec or exit.
        self.world: ProcessTable = ProcessTable(self)
        self.parent: Kernel | None = None
        self.children: list[Kernel] = []
        self.child_wait = WaitQueue()
        self.vfork_parent: Task | None = None
        self.pgid = self.pid
        self.reaped = False
        self.exit_order = 0                # when it ended, among the run's processes
        self._hook: int | None = None
        self._host_errors: set[tuple[int, type]] = set()    # (nr, kind) reported

    # --- reporting -------------------------------------------------------------------
    def report(self, message: str, kind: str = NOTE, key: object = None) -> None:
        """An emulator diagnostic (not guest output) into the run's log
        (:mod:`._diag`): printed only when the log is verbose."""
        self.diagnostics.log(kind, message, key)

    def deny(self, path: str, *, counted: bool = True) -> None:
        """The view refused ``path``: logged once (a lookup only, ``counted=False``:
        a note for ``-v``, not a denied access of the summary)."""
        if path not in self.denied:
            self.denied.append(path)
        if counted:
            self.report(f"denied access to {path!r}: not allowed by the guest's file view", DENIED,
                        key=("denied", path))
        else:
            self.report(f"denied a lookup of {path!r}: not allowed by the guest's file view", NOTE,
                        key=("lookup", path))

    # --- guest memory helpers ---------------------------------------------------------
    def read_str(self, addr: int, limit: int = 4096) -> str:
        """The NUL-terminated guest string at ``addr`` (``strncpy_from_user``)."""
        if not addr:
            raise KernelError(errno.EFAULT)
        out = bytearray()
        while len(out) < limit:
            chunk = self.read(addr + len(out), min(256, 0x1000 - (addr + len(out)) % 0x1000))
            nul = chunk.find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                return out.decode("utf-8", errors="surrogateescape")
            out += chunk
        raise KernelError(errno.ENAMETOOLONG)

    def read(self, addr: int, size: int) -> bytes:
        if size and self.mem.region_at(addr) is None:
            raise KernelError(errno.EFAULT)
        try:
            return self.mem.read(addr, size)
        except Exception:
            raise KernelError(errno.EFAULT) from None

    def write(self, addr: int, data: bytes) -> None:
        try:
            self.mem.write(addr, data)
        except Exception:
            raise KernelError(errno.EFAULT) from None

    # --- process end ---------------------------------------------------------------------
    def exit(self, status: int, signal: int = 0) -> None:
        """End the process (``do_exit`` of every thread). The run's first process
        ends the run (every other process is killed, as when a PID namespace's
        init exits): :meth:`Machine.run` returns ``status``. Another process
        becomes a zombie its parent reaps (:mod:`._process`)."""
        if self.exited is not None:
            return
        self.exited = ProcessExit(status, signal)
        self.files.close_all()
        sched = self.m.sched
        if sched is not None:
            for task in self.threads:
                self.futexes.forget(task)
                sched.finish(task, None)
        if self.parent is None:
            self.world.end_all(self)
            self.m.abort(self.exited)
        else:
            self.world.exited(self)
            if sched is not None:
                sched.end_slice_now()

    # --- the hook ----------------------------------------------------------------------
    def install(self) -> None:
        """Start serving the guest's ``syscall`` instructions."""
        self._hook = self.m._hooks.add(_uc.UC_HOOK_INSN, HOOK_INSN_SYSCALL_CFUNC,
                                       self._make_hook(), 1, 0, ctypes.c_int(UC_X86_INS_SYSCALL))

    def _make_hook(self) -> Any:
        gpr = self.cpu.gpr
        table = SYSCALLS
        cpu = self.cpu

        m = self.m

        def on_syscall(_uch: Any, _user: Any) -> None:
            try:
                for pause in m.on_pause:    # buffered trace events go out first
                    pause()
                nr = gpr[RAX]
                # The calling task's process: a vfork child runs in its parent's machine.
                task = m.current_task
                k = task.process or self
                try:
                    entry = table.get(nr)
                    if entry is None:
                        ret = k._unknown(nr) & MASK64
                    else:
                        fn, nargs = entry
                        args = (gpr[RDI], gpr[RSI], gpr[RDX], gpr[R10], gpr[R8], gpr[R9])
                        ret = fn(k, *args[:nargs]) & MASK64
                except KernelError as exc:
                    ret = -exc.errno & MASK64
                except Blocked:         # parked: the call runs again when woken (._wait)
                    gpr[RCX] = gpr[RIP] + 2
                    gpr[R11] = cpu.eflags
                    return
                except Exception as exc:
                    if isinstance(exc, EmuError | ProcessExit) or _raised_in_callback(exc):
                        raise
                    ret = -k._host_error(nr, exc) & MASK64
                finally:
                    task.retrying = False
                gpr[RAX] = ret
                gpr[RCX] = gpr[RIP] + 2
                gpr[R11] = cpu.eflags
            except BaseException as exc:  # on purpose, or Ctrl-C: ctypes would swallow it
                m.abort(exc)
        return on_syscall

    def _host_error(self, nr: int, exc: Exception) -> int:
        """The errno of a host exception a handler let through (see the module
        docstring); reported once per system call and kind, unless the host
        itself refused (an ``OSError``: ``ENOSPC`` on /dev/full is no bug)."""
        if isinstance(exc, OSError):
            code = exc.errno
            return code if isinstance(code, int) and 0 < code < 4096 else errno.EIO
        code = next((e for kind, e in _HOST_ERRNO if isinstance(exc, kind)), _OTHER_ERRNO)
        key = (nr, type(exc))
        if key not in self._host_errors:
            self._host_errors.add(key)
            name = SYSCALL_NAMES.get(nr, f"syscall_{nr}")
            kind = type(exc)
            what = kind.__name__ if kind.__module__ == "builtins" else \
                f"{kind.__module__.split('.')[0]}.{kind.__name__}"
            if str(exc):
                what += f": {exc}"
            self.report(f"{name} returns -{errno.errorcode[code]}: the emulator failed with {what} "
                        f"(at {self.m.symbolize(self.cpu.gpr[RIP])}; a bug in the syscall layer)",
                        EMULATOR_ERROR)
        return code

    def _unknown(self, nr: int) -> int:
        unknown = self.m.unknown_syscalls
        if nr not in unknown:
            unknown[nr] = SYSCALL_NAMES.get(nr, f"syscall_{nr}")
            self.report(f"unknown system call {nr} ({unknown[nr]}) returns -ENOSYS "
                        f"(at {self.m.symbolize(self.cpu.gpr[RIP])})", UNKNOWN_SYSCALL, nr)
        return -errno.ENOSYS


def _raised_in_callback(exc: BaseException) -> bool:
    """``exc`` came out of a client's callback that the syscall layer called
    (a probe registered from ``on_object_mapped`` during ``mmap``): below the
    hook, a frame of the layer's own code, then deeper a client's. A handler a
    user registered is the layer itself: its errors become errnos too."""
    tb = exc.__traceback__
    tb = tb.tb_next if tb is not None else None      # the syscall hook itself
    own = False
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename
        if path.startswith("<") or os.path.realpath(path).startswith(_OWN_CODE):
            own = True
        elif own:
            return True
        tb = tb.tb_next
    return False
