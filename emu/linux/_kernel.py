"""The syscall layer of one guest process: state, the ``syscall`` hook, dispatch.

The ``syscall`` instruction reaches :meth:`Kernel._on_syscall` through a Unicorn
``UC_HOOK_INSN`` hook added with a raw ctypes callback. Unicorn calls it with
RIP on the ``syscall`` instruction and advances RIP past it afterwards. The
number is in rax, the arguments in rdi, rsi, rdx, r10, r8, r9, the result goes
to rax; like the kernel's ``entry_SYSCALL_64``, rcx gets the return address and
r11 the flags. Handlers live in ``_sys_*.py`` modules and register in
:data:`emu.linux._registry.SYSCALLS`; an unknown number returns ``-ENOSYS`` and is
reported once.
"""

from __future__ import annotations

import ctypes
import errno
import random
import sys
from typing import TYPE_CHECKING, Any

from unicorn import unicorn_const as _uc
from unicorn.x86_const import UC_X86_INS_SYSCALL

from .._regtable import MASK64, R8, R9, R10, R11, RAX, RCX, RDI, RDX, RIP, RSI
from .._task import Task
from ._files import FdTable, InputFile, OutputFile
from ._fs import FsPolicy
from ._futex import FutexTable
from ._mm import AddressSpace
from ._registry import SYSCALLS, KernelError
from ._sysnr import SYSCALL_NAMES

if TYPE_CHECKING:
    from .._machine import Machine

__all__ = ["Kernel", "ProcessExit"]

HOOK_INSN_SYSCALL_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
UID = GID = 1000


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
        denied: host paths the policy refused, in order, each once.
    """

    def __init__(self, m: Machine, fs: FsPolicy, mm: AddressSpace, *, stdin: bytes = b"",
                 exe_path: str = "", seed: int = 0) -> None:
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
        self.threads: list[Task] = [m.tasks[0]]     # the thread group, leader first
        self.futexes = FutexTable()
        self.uid, self.gid = UID, GID
        self.files = FdTable()
        self.files.install(InputFile(stdin), 0)
        self.files.install(OutputFile("pipe:[stdout]", lambda: m.stdout), 1)
        self.files.install(OutputFile("pipe:[stderr]", lambda: m.stderr), 2)
        self.sigactions: dict[int, bytes] = {}
        self.sigmask = 0
        self.denied: list[str] = []
        self.exited: ProcessExit | None = None
        self._hook: int | None = None

    # --- reporting -------------------------------------------------------------------
    def report(self, message: str) -> None:
        """An emulator diagnostic (not guest output): one line on the host's stderr."""
        print(f"kprobe-emu: {message}", file=sys.stderr, flush=True)

    def deny(self, path: str) -> None:
        if path not in self.denied:
            self.denied.append(path)
            self.report(f"denied access to {path!r}: outside the guest's file system "
                        f"(map a directory with fs_root / --fs-root)")

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
        """End the process: stop the engine; :meth:`Machine.run` returns ``status``."""
        self.exited = ProcessExit(status, signal)
        self.files.close_all()
        sched = self.m.sched
        if sched is not None:
            for task in self.threads:
                self.futexes.forget(task)
                sched.finish(task, None)
        self.m.abort(self.exited)

    # --- the hook ----------------------------------------------------------------------
    def install(self) -> None:
        """Start serving the guest's ``syscall`` instructions."""
        self._hook = self.m._hooks.add(_uc.UC_HOOK_INSN, HOOK_INSN_SYSCALL_CFUNC,
                                       self._make_hook(), 1, 0, ctypes.c_int(UC_X86_INS_SYSCALL))

    def _make_hook(self) -> Any:
        gpr = self.cpu.gpr
        table = SYSCALLS
        cpu = self.cpu

        def on_syscall(_uch: Any, _user: Any) -> None:
            try:
                nr = gpr[RAX]
                entry = table.get(nr)
                if entry is None:
                    ret = self._unknown(nr)
                else:
                    fn, nargs = entry
                    args = (gpr[RDI], gpr[RSI], gpr[RDX], gpr[R10], gpr[R8], gpr[R9])
                    ret = fn(self, *args[:nargs])
            except KernelError as exc:
                ret = -exc.errno
            except BaseException as exc:  # ctypes would swallow it: carry it to run()
                self.m.abort(exc)
                return
            gpr[RAX] = ret & MASK64
            gpr[RCX] = gpr[RIP] + 2
            gpr[R11] = cpu.eflags
        return on_syscall

    def _unknown(self, nr: int) -> int:
        unknown = self.m.unknown_syscalls
        if nr not in unknown:
            unknown[nr] = SYSCALL_NAMES.get(nr, f"syscall_{nr}")
            self.report(f"unknown system call {nr} ({unknown[nr]}) returns -ENOSYS "
                        f"(at {self.m.symbolize(self.cpu.gpr[RIP])})")
        return -errno.ENOSYS
