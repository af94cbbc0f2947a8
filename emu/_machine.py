"""The Machine: one Unicorn x86-64 engine, its memory, symbols, tasks and dispatch.

``emu`` knows nothing of probes. It offers what a debugger-like client needs:
- ``traps``: a dispatch table address -> callback for ``int3`` hits, consulted
  by the single interrupt hook (``callback(addr)`` runs with the guest stopped
  on the trap, ``cpu.gpr[RIP] == addr + 1``; it may redirect by writing RIP);
- :meth:`hook_code`: "the guest reached X", a Unicorn code hook on one address;
- :meth:`abort`: stop the guest from inside a callback and have :meth:`call`
  raise the given exception;
- memory patches with shadow bytes (:class:`emu._memory.Memory`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc, UcError
from unicorn import unicorn_const as _uc
from unicorn.x86_const import UC_X86_REG_FPCW, UC_X86_REG_MXCSR

from ._asm import assemble
from ._cpu import Cpu
from ._errors import EmuError, GuestFault, SymbolNotFound
from ._memory import PAGE, PROT_RW, PROT_RWX, PROT_RX, Memory, page_up
from ._objects import ObjectTable
from ._regtable import ARG_REGS, MASK64, RAX, RBP, RIP, RSP, to_signed64
from ._streams import HostStream
from ._symbols import SymbolTable
from ._task import Task
from ._uclib import HOOK_CODE_CFUNC, HOOK_INTR_CFUNC, HOOK_MEM_INVALID_CFUNC, RawHooks
from ._unwind import unwind

if TYPE_CHECKING:
    from .linux import Kernel

__all__ = ["Machine", "DEFAULT_MAX_INSNS"]

DEFAULT_MAX_INSNS = 100_000_000
STACK_SIZE = 0x100000
STACK_TOP = 0x7FFF_FFFF_0000
_RED_ZONE = 128

_FAULT_KIND = {
    _uc.UC_ERR_READ_UNMAPPED: ("unmapped", "read from unmapped memory"),
    _uc.UC_ERR_WRITE_UNMAPPED: ("unmapped", "write to unmapped memory"),
    _uc.UC_ERR_FETCH_UNMAPPED: ("unmapped", "instruction fetch from unmapped memory"),
    _uc.UC_ERR_READ_PROT: ("protection", "read from protected memory"),
    _uc.UC_ERR_WRITE_PROT: ("protection", "write to protected memory"),
    _uc.UC_ERR_FETCH_PROT: ("protection", "instruction fetch from non-executable memory"),
    _uc.UC_ERR_INSN_INVALID: ("invalid-instruction", "invalid instruction"),
    _uc.UC_ERR_READ_UNALIGNED: ("unmapped", "unaligned read"),
    _uc.UC_ERR_WRITE_UNALIGNED: ("unmapped", "unaligned write"),
    _uc.UC_ERR_EXCEPTION: ("exception", "unhandled CPU exception"),
}

Callback = Callable[[int], None]


class Machine:
    """An x86-64 guest: engine, memory, symbols, tasks.

    Args:
        max_insns: instruction budget of each :meth:`call` (``None``: unlimited,
            which also removes Unicorn's per-instruction counting cost).
        timeout: wall-clock limit of each :meth:`call` in seconds, or ``None``.
        fast_registers: use the live register block (see :mod:`emu._cpu`).
    """

    def __init__(self, *, max_insns: int | None = DEFAULT_MAX_INSNS,
                 timeout: float | None = None, fast_registers: bool = True) -> None:
        self._uc = Uc(UC_ARCH_X86, UC_MODE_64)
        # Unicorn starts with the x87 control word and MXCSR at 0 (all exceptions
        # unmasked, odd rounding); a Linux task starts with FNINIT's values.
        self._uc.reg_write(UC_X86_REG_FPCW, 0x37F)
        self._uc.reg_write(UC_X86_REG_MXCSR, 0x1F80)
        self.cpu = Cpu(self._uc, fast=fast_registers)
        self.mem = Memory(self._uc)
        self.symbols = SymbolTable()
        self.max_insns = max_insns
        self.timeout = timeout
        self.traps: dict[int, Callback] = {}
        self._hooks = RawHooks(self._uc)
        self._code_hooks: dict[int, int] = {}      # handle -> address
        self._abort_exc: BaseException | None = None
        self._fault: tuple[str, str] | None = None
        self._fault_addr: int | None = None     # the bad access of the last fault
        self._depth = 0
        # Per-machine state of client packages (e.g. probes), keyed by package.
        self.extensions: dict[str, Any] = {}
        # Called before each outermost call()/run(): no guest code or callback is
        # in progress then, so clients can drop state an aborted run left behind.
        self.on_start: list[Callable[[], None]] = []
        stack = self.mem.map(STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_RW, "[stack]")
        self.tasks: list[Task] = [Task(1, stack)]
        self.current_task: Task = self.tasks[0]
        self._exit = self.mem.map(STACK_TOP, PAGE, PROT_RX, "[exit]").start
        self.mem.write(self._exit, b"\xf4")   # never executed: emu_start stops on it
        # Programs loaded from ELF files (emu._elf, emu.linux): the mapped objects,
        # the syscall layer, and where the guest's standard output and error go
        # (binary or text streams, see emu._streams; default: the host's).
        self.objects = ObjectTable(self.symbols)
        self.on_object_mapped = self.objects.on_mapped
        self.kernel: Kernel | None = None
        self.stdout: Any = HostStream("stdout")
        self.stderr: Any = HostStream("stderr")
        self.unknown_syscalls: dict[int, str] = {}     # number -> name, each once
        self._install_hooks()

    # --- construction ---------------------------------------------------------
    @classmethod
    def from_asm(cls, source: str, base: int = 0x400000, **kwargs: Any) -> Machine:
        """Assemble Intel-syntax ``source`` at ``base``; labels become symbols."""
        m = cls(**kwargs)
        m.load_asm(source, base)
        return m

    @classmethod
    def from_elf(cls, path: str, argv: Sequence[str | bytes] | None = None,
                 env: Mapping[str, str] | Sequence[str] | None = None, stdin: bytes = b"",
                 fs_root: str | None = None, fs_writable: bool = False, *, seed: int = 0,
                 **kwargs: Any) -> Machine:
        """Load an x86-64 ELF program (static, static-pie or dynamic), ready to :meth:`run`.

        Args:
            path: the executable.
            argv: its arguments including ``argv[0]`` (default ``[path]``).
            env: its environment (default: empty, for reproducible runs).
            stdin: everything its standard input will read.
            fs_root: a host directory the guest may read (its working directory).
            fs_writable: the guest may also write under ``fs_root``.
            seed: seeds ``AT_RANDOM`` and ``getrandom``.
            kwargs: passed to :class:`Machine` (``max_insns`` for :meth:`call`, ...).

        Raises:
            LoadError: the file (or its interpreter) cannot be loaded; one line.
        """
        from ._elf import load_program
        m = cls(**kwargs)
        m.kernel = load_program(m, path, argv, env, stdin, fs_root, fs_writable, seed)
        return m

    def load_asm(self, source: str, base: int) -> None:
        if base % PAGE:
            raise EmuError(f"base {base:#x} is not page-aligned")
        out = assemble(source, base)
        self.mem.map(base, page_up(max(len(out.code), 1)), PROT_RWX, "[asm]")
        self.mem.write(base, out.code)
        for name, addr, size in out.symbols:
            self.symbols.add(name, addr, size)

    # --- hooks and dispatch ---------------------------------------------------
    def _install_hooks(self) -> None:
        traps = self.traps
        gpr = self.cpu.gpr

        def on_intr(_uch: Any, intno: int, _key: Any) -> None:
            try:
                if intno == 3:
                    addr = gpr[RIP] - 1
                    fn = traps.get(addr)
                    if fn is not None:
                        fn(addr)
                        return
                    self._fault = ("trap", f"int3 at {self.symbolize(addr)} ({addr:#x}) with no handler")
                else:
                    self._fault = ("trap", f"unhandled interrupt {intno} at {gpr[RIP]:#x}")
                self._uc.emu_stop()
            except BaseException as exc:  # ctypes would swallow it: carry it to call()
                self.abort(exc)

        def on_bad_mem(_uch: Any, access: int, addr: int, size: int, _v: int, _k: Any) -> bool:
            self._fault_addr = addr
            return False

        self._hooks.add(_uc.UC_HOOK_INTR, HOOK_INTR_CFUNC, on_intr)
        self._hooks.add(_uc.UC_HOOK_MEM_UNMAPPED | _uc.UC_HOOK_MEM_PROT,
                        HOOK_MEM_INVALID_CFUNC, on_bad_mem)

    def hook_code(self, addr: int, fn: Callable[..., None], *, raw: bool = False) -> int:
        """Call ``fn(addr)`` each time the guest is about to execute ``addr``.

        Takes effect at once, also for code translated earlier. Returns a handle
        for :meth:`unhook`. Inside ``fn`` redirect with
        ``cpu.set_pc_from_code_hook``, never by writing ``cpu.gpr[RIP]``.

        With ``raw=True`` Unicorn calls ``fn(uch, addr, size, key)`` directly
        (one Python frame less on a hot path); ``fn`` must then catch its own
        exceptions and hand them to :meth:`abort`, as ctypes would drop them.
        """
        def on_code(_uch: Any, address: int, _size: int, _key: Any) -> None:
            try:
                fn(address)
            except BaseException as exc:
                self.abort(exc)

        callback = fn if raw else on_code
        handle = self._hooks.add(_uc.UC_HOOK_CODE, HOOK_CODE_CFUNC, callback, addr, addr)
        self._code_hooks[handle] = addr
        self.mem.invalidate_code(addr, addr + 1)
        return handle

    def unhook(self, handle: int) -> None:
        """Remove a :meth:`hook_code` hook; blocks that called it are retranslated."""
        self._hooks.delete(handle)
        addr = self._code_hooks.pop(handle)
        self.mem.invalidate_code(addr, addr + 1)

    def abort(self, exc: BaseException) -> None:
        """Stop the guest; the running :meth:`call` raises ``exc`` (the first one)."""
        if self._abort_exc is None:
            self._abort_exc = exc
        self._uc.emu_stop()

    def new_task(self, stack_size: int = STACK_SIZE) -> Task:
        """A new task with a stack of its own; make it ``current_task`` to run
        calls on it. (Tasks do not run concurrently until the scheduler lands.)"""
        region = self.mem.map_anywhere(stack_size, PROT_RW, "[stack]", near=STACK_TOP - STACK_SIZE)
        task = Task(max(t.tid for t in self.tasks) + 1, region)
        self.tasks.append(task)
        return task

    @property
    def uc(self) -> Uc:
        """The underlying Unicorn engine. Using it directly bypasses the machine's
        bookkeeping (memory map, patches, caches): for benchmarks and experiments."""
        return self._uc

    @property
    def exit_address(self) -> int:
        """The return address :meth:`call` pushes: reaching it ends the call."""
        return self._exit

    def unwind(self, rip: int, rsp: int, rbp: int) -> list[tuple[int, int | None]]:
        """Frame-pointer unwind: ``[(rip, None), (return address, its stack slot), ...]``."""
        return list(unwind(self, rip, rsp, rbp))

    # --- symbols ----------------------------------------------------------------
    def resolve(self, func: str | int) -> int:
        if isinstance(func, int):
            return func
        sym = self.symbols.get_symbol(func)
        if sym is None:
            raise SymbolNotFound(func)
        return sym.addr

    def symbolize(self, addr: int) -> str:
        """``name+0xOFF`` for ``addr``, or its hex value when no symbol holds it."""
        return self.symbols.symbolize(addr)

    # --- memory -------------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        """Guest memory; probed addresses show their original bytes."""
        return self.mem.read(addr, size)

    def write(self, addr: int, data: bytes) -> None:
        self.mem.write(addr, data)

    # --- running --------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """How many :meth:`call` are running (more than one: called from a callback)."""
        return self._depth

    def call(self, func: str | int, *args: int) -> int:
        """Call ``func`` with up to six integer arguments; return RAX, signed.

        Raises:
            SymbolNotFound: ``func`` is an unknown name.
            GuestFault: the guest faulted or exceeded its budget.
        """
        addr = self.resolve(func)
        if len(args) > len(ARG_REGS):
            raise EmuError(f"call({func!r}) takes at most {len(ARG_REGS)} integer arguments, got {len(args)}")
        gpr = self.cpu.gpr
        nested = self._depth > 0
        if not nested:
            self._start()
            gpr[RBP] = 0                # the outermost frame: ends frame-pointer chains
        saved = self._uc.context_save() if nested else None
        top = gpr[RSP] - _RED_ZONE if nested else self.current_task.stack_top - 64
        sp = (top & ~0xF) - 8           # SysV: rsp + 8 is 16-byte aligned at entry
        self.mem.write_u64(sp, self._exit)
        gpr[RSP] = sp
        for reg, value in zip(ARG_REGS, args, strict=False):
            gpr[reg] = value & MASK64
        self._depth += 1
        try:
            self._run(addr, self._exit)
            return to_signed64(gpr[RAX])
        finally:
            self._depth -= 1
            if saved is not None:
                self._uc.context_restore(saved)

    def run(self, *, max_insns: int | None = None, timeout: float | None = None) -> int:
        """Run the program loaded by :meth:`from_elf` to its end.

        Args:
            max_insns: instruction budget of the whole run (default: none).
            timeout: wall-clock limit in seconds (default: none).

        Returns:
            The exit status (0..255), or 128 + the signal number when a signal
            ended the process, as a shell reports it.

        Raises:
            GuestFault: the guest faulted or exceeded its budget.
        """
        from .linux import ProcessExit
        kernel = self.kernel
        if kernel is None:
            raise EmuError("run() needs a program: load one with Machine.from_elf")
        if kernel.exited is not None:
            raise EmuError("the program has already run to its exit")
        # The process's registers, as loaded or as a stopped run left them:
        # call() in between (on the program's functions) must not disturb them.
        if self._depth == 0:
            self._start()
        self._uc.context_restore(kernel.context)
        saved = (self.max_insns, self.timeout)
        self.max_insns, self.timeout = max_insns, timeout
        self._depth += 1
        try:
            self._run(self.cpu.gpr[RIP], self._exit)
        except ProcessExit as done:
            return done.status
        finally:
            self._depth -= 1
            self.max_insns, self.timeout = saved
            kernel.context = self._uc.context_save()
        raise GuestFault("guest fault: the program returned into the emulator's exit page",
                         rip=self._exit, reason="exception")

    def _start(self) -> None:
        self._hooks.release_retired()
        for fn in self.on_start:
            fn()

    def _run(self, begin: int, until: int) -> None:
        self._fault = None
        self._fault_addr = None
        count = self.max_insns or 0
        timeout_us = int(self.timeout * 1e6) if self.timeout else 0
        started = time.monotonic()
        error: UcError | None = None
        try:
            self._uc.emu_start(begin, until, timeout_us, count)
        except UcError as exc:
            error = exc
        if self._abort_exc is not None:
            aborted, self._abort_exc = self._abort_exc, None
            raise aborted
        rip = self.cpu.gpr[RIP]
        if error is not None:
            kind, what = _FAULT_KIND.get(error.errno, ("exception", str(error)))
            known = self._fault_addr is not None and kind != "invalid-instruction"
            at = f" at {self._fault_addr:#x}" if known else ""
            raise GuestFault(f"guest fault: {what}{at} (rip={rip:#x} {self.symbolize(rip)})",
                             rip=rip, reason=kind)
        if self._fault is not None:
            kind, what = self._fault
            raise GuestFault(f"guest fault: {what}", rip=rip, reason=kind)
        if rip == until:
            return
        if self.mem.region_at(rip - 1) and self.mem.read(rip - 1, 1) == b"\xf4":
            raise GuestFault(f"guest fault: hlt at {self.symbolize(rip - 1)} ({rip - 1:#x})",
                             rip=rip - 1, reason="exception")
        if self.timeout and time.monotonic() - started >= self.timeout:
            raise GuestFault(f"guest ran away: timeout of {self.timeout} s reached at "
                             f"{self.symbolize(rip)} ({rip:#x})", rip=rip, reason="timeout")
        raise GuestFault(f"guest ran away: instruction budget of {count} exhausted at "
                         f"{self.symbolize(rip)} ({rip:#x})", rip=rip, reason="insn-budget")
