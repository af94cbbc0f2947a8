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

import ctypes
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn import unicorn_const as _uc
from unicorn.x86_const import UC_X86_INS_SYSENTER, UC_X86_REG_FPCW, UC_X86_REG_MXCSR, UC_X86_REG_RIP

from . import native
from ._asm import assemble
from ._cpu import Cpu
from ._engine import UNLIMITED, Engine
from ._errors import EmuError, GuestFault, SymbolNotFound
from ._interrupt import Owner, check_max_insns, check_timeout, check_timeslice, unwatch, watch
from ._memory import DEFAULT_MEM_LIMIT, PAGE, PROT_RW, PROT_RWX, PROT_RX, Memory, page_up
from ._objects import ObjectTable
from ._regtable import ARG_REGS, MASK64, RAX, RBP, RIP, RSP, to_signed64
from ._sched import Scheduler
from ._stops import StopsMixin, canonical
from ._streams import HostStream
from ._symbols import SymbolTable
from ._task import Task
from ._tasking import ABI_CLEAR_FLAGS, NEVER, STACK_SIZE, STACK_TOP, TaskingMixin
from ._uclib import HOOK_CODE_CFUNC, HOOK_INTR_CFUNC, HOOK_MEM_INVALID_CFUNC, RawHooks
from ._unwind import unwind

if TYPE_CHECKING:
    from .linux import Diagnostics, FsPolicy, Kernel

__all__ = ["Machine", "DEFAULT_MAX_INSNS", "MAX_CALL_DEPTH"]

# No instruction budget unless one is asked for: counting instructions costs
# Unicorn a helper call on each one (1.9x on tight loops, issue 12). A runaway
# call stops with Ctrl-C, a ``timeout`` (free: a timer) or a budget.
DEFAULT_MAX_INSNS: int | None = None
# call() from hooks nests emu_start; Unicorn 2.1 crashes past 64 nested starts.
MAX_CALL_DEPTH = 32
_HOOK_INSN_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
# bool cb(uc, vaddr, uc_mem_type, uc_tlb_entry *result, user_data)
_HOOK_TLB_CFUNC = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                                   ctypes.c_void_p, ctypes.c_void_p)
_TLB_ENTRY = ctypes.c_char * 12               # struct uc_tlb_entry { uint64_t paddr; uc_prot perms; }
_TLB_RWX = struct.Struct("<QI")
_T = TypeVar("_T")
# emu._asm shares one Keystone engine, which two threads assembling at once crash;
# emu._cpu finds a new engine's registers by writing a pattern and searching for
# it, which two threads doing at once could confuse.
_ASSEMBLING = threading.Lock()
_LOCATING_REGISTERS = threading.Lock()
_PAUSE = b"\xf3\x90"
_RESUMABLE = ("insn-budget", "timeout")   # GuestFault reasons a later run() goes on from
_RED_ZONE = 128
KTIME_MAX = (1 << 63) - 1           # include/linux/ktime.h: where native readers saturate


Callback = Callable[[int], None]


class _TrapTable(dict[int, Any]):
    """The trap table (address -> callable(address)). With the native
    dispatcher, an address may also have a native trap (a C function tried
    first, without the GIL: :meth:`Machine.set_native_trap`); any other change
    of that address drops it, so the two never disagree."""

    __slots__ = ("dispatch",)

    def __init__(self) -> None:
        super().__init__()
        self.dispatch: Any = None

    def __setitem__(self, addr: int, fn: Callback) -> None:
        super().__setitem__(addr, fn)
        if self.dispatch is not None:
            self.dispatch.clear_native(addr)

    def __delitem__(self, addr: int) -> None:
        super().__delitem__(addr)
        if self.dispatch is not None:
            self.dispatch.clear_native(addr)

    def pop(self, addr: int, *default: Any) -> Any:
        if self.dispatch is not None:
            self.dispatch.clear_native(addr)
        return super().pop(addr, *default)

    def clear(self) -> None:
        super().clear()
        if self.dispatch is not None:
            self.dispatch.clear_natives()

    def popitem(self) -> Any:
        raise TypeError("the trap table does not pop arbitrary items")

    def update(self, *args: Any, **kwargs: Any) -> None:
        for addr, fn in dict(*args, **kwargs).items():
            self[addr] = fn

    def setdefault(self, addr: int, fn: Any = None) -> Any:
        if addr not in self:
            self[addr] = fn
        return self[addr]


class Machine(TaskingMixin, StopsMixin):
    """An x86-64 guest: engine, memory, symbols, tasks.

    Args:
        max_insns: instruction budget of each :meth:`call`, a positive integer,
            or ``None`` (the default: unlimited, and no per-instruction counting
            cost, so unprobed code runs at Unicorn's speed; 0 is refused, not
            "unlimited").
        timeout: wall-clock limit of each :meth:`call` in seconds (positive,
            finite), or ``None``.
        fast_registers: use the live register block (see :mod:`emu._cpu`).
        mem_limit: the most bytes the guest may have mapped (default 4 GiB):
            a guest ``mmap``, ``brk`` or ``mremap`` past it fails with ``ENOMEM``.
            The processes of a run share it.
        tcg_buffer_size: bytes of host address space for translated code
            (Unicorn's default: 1 GiB of reserved, untouched memory; a full
            buffer is flushed and code is translated again).

    A machine holds host resources (the guest's open files); :meth:`close` or a
    ``with`` block releases them, and so does collecting the machine. It runs on
    one host thread at a time (:meth:`exclusive`), and Ctrl-C stops its runs
    (:mod:`emu._interrupt`).
    """

    def __init__(self, *, max_insns: int | None = DEFAULT_MAX_INSNS,
                 timeout: float | None = None, fast_registers: bool = True,
                 mem_limit: int = DEFAULT_MEM_LIMIT, tcg_buffer_size: int | None = None) -> None:
        self._uc = Uc(UC_ARCH_X86, UC_MODE_64)
        if tcg_buffer_size is not None:     # before anything initialises the engine
            self._uc.ctl_set_tcg_buffer_size(tcg_buffer_size)  # type: ignore[attr-defined]
        # Unicorn's default (CPU) TLB drops address bits 52..63, so a non-canonical
        # address such as 0x0010000000400000 silently aliases 0x400000. The virtual
        # TLB keeps all 64 bits and asks a hook on each fill (on_tlb_fill): it
        # refuses non-canonical pages (#GP, see _fault_of) and maps the others one
        # to one, read-write-execute (memory protections are checked apart, as
        # before). Without the hook a fill grants only the access at hand, and a
        # page that is read and written ping-pongs (3.5x slower).
        self._uc.ctl_set_tlb_mode(_uc.UC_TLB_VIRTUAL)  # type: ignore[attr-defined]
        # Unicorn starts with the x87 control word and MXCSR at 0 (all exceptions
        # unmasked, odd rounding); a Linux task starts with FNINIT's values.
        self._uc.reg_write(UC_X86_REG_FPCW, 0x37F)
        self._uc.reg_write(UC_X86_REG_MXCSR, 0x1F80)
        with _LOCATING_REGISTERS:
            self.cpu = Cpu(self._uc, fast=fast_registers)
        self.mem = Memory(self._uc, mem_limit)
        self.symbols = SymbolTable()
        self.max_insns = max_insns
        self.timeout = timeout
        self._owner = Owner()             # the host thread inside (emu._interrupt)
        self.traps: dict[int, Callback] = _TrapTable()
        # Defaults of run()'s scheduler for a loaded program (from_elf sets them).
        self.seed = 0
        self.timeslice = 1000
        self._hooks = RawHooks(self._uc)
        self._code_hooks: dict[int, int] = {}      # handle -> address
        self._abort_exc: BaseException | None = None
        self._fault: tuple[str, str] | None = None
        self._fault_addr: int | None = None     # the bad access of the last fault
        self._fault_rip: int | None = None      # where a fault stopped, when not RIP
        self._fault_intno: int | None = None    # the interrupt of the last trap
        # The last fault _fault_of reported: (bad access address, interrupt number),
        # either None (emu.linux turns a fault into a signal with si_addr from it).
        self.last_fault: tuple[int | None, int | None] = (None, None)
        self._depth = 0
        # Per-machine state of client packages (e.g. probes), keyed by package.
        self.extensions: dict[str, Any] = {}
        # Called before each outermost call()/run(): no guest code or callback is
        # in progress then, so clients can drop state an aborted run left behind.
        self.on_start: list[Callable[[], None]] = []
        # Called around each call() with the task it runs on: when it ends (returned,
        # faulted or aborted) its frames are gone, whatever the guest did to its stack.
        self.on_call_start: list[Callable[[Task], None]] = []
        self.on_call_end: list[Callable[[Task], None]] = []
        # Where relocated code really is: each callback maps an address of a copy
        # (a probe's out-of-line slot) to the instruction it copies, or None. A
        # fault is reported at the original (the kernel's kprobe_fault_handler).
        self.rip_fixups: list[Callable[[int], int | None]] = []
        # Processes (emu.linux): called with (parent's machine, child's machine) when
        # a fork copies an address space, and (old machine, new machine) when a
        # process execs a program; one list for every machine of a run, so that a
        # client (probes) follows every process, as uprobes do.
        self.on_fork: list[Callable[[Machine, Machine], None]] = []
        self.on_exec: list[Callable[[Machine, Machine], None]] = []
        # Called whenever guest code pauses: at each system call's entry (emu.linux)
        # and each time the engine stops (the end of a call, a slice, a fault);
        # one list for every machine of a run too. Clients that buffer what hits
        # produce (probes.events' native ring) deliver it here, in order with the
        # guest's own output.
        self.on_pause: list[Callable[[], None]] = []
        stack = self.mem.map(STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_RW, "[stack]")
        # Where the tids of new tasks come from: None, one more than the highest;
        # the processes of a run (emu.linux) share one allocator.
        self.next_tid: Callable[[], int] | None = None
        self.tasks: list[Task] = [Task(1, stack, machine=self)]
        self.current_task: Task = self.tasks[0]
        # Called with the task each time current_task changes (set_current_task):
        # clients keeping per-task state in C (the probes' native core) follow it.
        self.on_switch: list[Callable[[Task], None]] = []
        # The program's and its interpreter's entry points (emu._elf): jumped to at
        # exec, never called (so a return probe there has no return address).
        self.entry_points: set[int] = set()
        # Scheduling (emu._sched): the run in progress, the virtual clock (ns =
        # instructions retired while tasks were sliced), the task whose registers
        # the engine holds (None: whatever a call() left), and the kernel-style
        # preempt_count (non-zero: a client needs this task to keep the CPU).
        self.sched: Scheduler | None = None
        # The virtual clock (ns = instructions retired): a Python int, unbounded (a
        # guest may sleep 2**63 s), and a copy in a cell for the native core to read
        # at a hit, saturated at the kernel's KTIME_MAX.
        self._clock_ns = 0
        self._clock = native.Cell(0)
        # Count every instruction of run()/run_tasks(), even with one task, so that
        # now() is exact at every probe hit (tracing's virtual clock; costs the
        # count hook, about 4x on tight loops).
        self.exact_clock = False
        self.preempt_count = 0
        self.on_task_exit: list[Callable[[Task], None]] = []
        self._engine_owner: Task | None = None
        # Probe hits until the scheduler cuts the slice, in a cell the native core
        # decrements too (emu.native.Cell).
        self._hits = native.Cell(NEVER)
        self.engine = Engine(self._uc)
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

    # --- lifetime -------------------------------------------------------------
    def close(self) -> None:
        """Release the host resources of the guest: every host file descriptor it
        has open is closed (its files read as closed afterwards). Idempotent; a
        closed machine is not to be run again. Without it the descriptors are
        closed when the process exits, or when the machine is collected (each
        open file owns its descriptor through a finalizer)."""
        if self.kernel is not None:
            self.kernel.files.close_all()

    def release(self) -> None:
        """Give back the engine and the memory of a machine no task will run again
        (the address space of an ended process, or one it left by ``execve``):
        its regions are unmapped and its engine dropped, so using it afterwards
        raises ``AttributeError`` rather than touching freed memory."""
        if getattr(self, "_released", False):
            return
        with self._owner:
            for r in list(self.mem.regions):
                self.mem.unmap(r)
            self._released = True
            self.extensions.clear()
            self.traps.clear()
            for callbacks in (self.on_start, self.on_task_exit, self.on_call_start, self.on_call_end,
                              self.rip_fixups, self.on_switch):
                callbacks.clear()           # clients' state (probes) goes with the machine
            self.kernel = None
            self.symbols = SymbolTable()        # an ended process's symbols weigh megabytes
            self.objects = ObjectTable(self.symbols)
            self.on_object_mapped = self.objects.on_mapped
            for name in ("engine", "cpu", "mem", "_hooks", "_uc"):
                delattr(self, name)

    @property
    def processes(self) -> list[Any]:
        """Every process of the program's run, in creation order (each an
        :class:`emu.linux.Kernel`: ``pid``, ``ppid``, ``exe_path``, ``threads``,
        ``exited``); empty for a machine without a loaded program."""
        if self.kernel is None:
            return []
        return list(self.kernel.world.all)

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def max_insns(self) -> int | None:
        """Instruction budget of each :meth:`call`: a positive int, or None (unlimited)."""
        return self._max_insns

    @max_insns.setter
    def max_insns(self, value: int | None) -> None:
        self._max_insns = check_max_insns(value)

    @property
    def timeout(self) -> float | None:
        """Wall-clock limit of each :meth:`call` in seconds (positive, finite), or None."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._timeout = check_timeout(value)

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
                 timeslice: int = 1000, fs: FsPolicy | None = None,
                 diagnostics: Diagnostics | None = None, **kwargs: Any) -> Machine:
        """Load an x86-64 ELF program (static, static-pie or dynamic), ready to :meth:`run`.

        Args:
            path: the executable.
            argv: its arguments including ``argv[0]`` (default ``[path]``).
            env: its environment (default: empty, for reproducible runs).
            stdin: everything its standard input will read.
            fs_root: a host directory the guest may read (its working directory).
            fs_writable: the guest may also write under ``fs_root``.
            seed: seeds ``AT_RANDOM``, ``getrandom`` and the scheduler of its threads.
            timeslice: the longest slice, in instructions, the scheduler gives a
                thread when several can run (see :meth:`run_tasks`).
            fs: the guest's file view, built by the caller (``fs_root`` and
                ``fs_writable`` are then ignored); default ``FsPolicy(fs_root, fs_writable)``.
            diagnostics: the log of denials and unknown system calls
                (:class:`emu.linux.Diagnostics`; default: a new, silent one).
            kwargs: passed to :class:`Machine` (``max_insns`` for :meth:`call`, ...).

        Raises:
            LoadError: the file (or its interpreter) cannot be loaded; one line.
        """
        from ._elf import load_program
        check_timeslice(timeslice)
        m = cls(**kwargs)
        m.kernel = load_program(m, path, argv, env, stdin, fs_root, fs_writable, seed, policy=fs,
                                diagnostics=diagnostics)
        m.seed, m.timeslice = seed, timeslice
        return m

    def load_asm(self, source: str, base: int) -> None:
        if base % PAGE:
            raise EmuError(f"base {base:#x} is not page-aligned")
        with _ASSEMBLING:
            out = assemble(source, base)
        with self._owner:
            self.mem.map(base, page_up(max(len(out.code), 1)), PROT_RWX, "[asm]")
            self.mem.write(base, out.code)
            for name, addr, size in out.symbols:
                self.symbols.add(name, addr, size)
            for addr in _pause_addresses(out.code, base):
                self.hook_code(addr, self._on_pause)

    def exclusive(self) -> Owner:
        """``with m.exclusive():`` holds the machine for this host thread.

        A Machine runs on one host thread at a time: :meth:`call`, :meth:`run`,
        :meth:`run_tasks` and the methods that change the machine take it this
        way, and clients that change it through other paths (probe registration
        patches memory and adds hooks) should too. Nested use by the thread that
        holds it (from a hook or handler) is free.

        Raises:
            EmuError: another thread is inside the machine (raised at once).
        """
        return self._owner

    # --- hooks and dispatch ---------------------------------------------------
    def _install_hooks(self) -> None:
        traps = self.traps
        gpr = self.cpu.gpr

        def unhandled(intno: int) -> None:
            """An interrupt no trap takes: a fault of the guest."""
            self._fault_intno = intno
            if intno == 3:
                addr = gpr[RIP] - 1
                self._fault = ("trap", f"int3 at {self.symbolize(addr)} ({addr:#x}) with no handler")
            else:
                self._fault = ("trap", f"unhandled interrupt {intno} at {gpr[RIP]:#x}")
            self._uc.emu_stop()

        def on_intr(_uch: Any, intno: int, _key: Any) -> None:
            try:
                if intno == 3:
                    addr = gpr[RIP] - 1
                    fn = traps.get(addr)
                    if fn is not None:
                        fn(addr)
                        return
                unhandled(intno)
            except BaseException as exc:  # ctypes would swallow it: carry it to call()
                self.abort(exc)

        def on_bad_mem(_uch: Any, access: int, addr: int, size: int, _v: int, _k: Any) -> bool:
            self._fault_addr = addr
            return False

        pack_entry, entry_at = _TLB_RWX.pack_into, _TLB_ENTRY.from_address

        def on_tlb_fill(_uch: Any, vaddr: int, _type: int, entry: int, _key: Any) -> bool:
            if canonical(vaddr):
                pack_entry(entry_at(entry), 0, vaddr, _uc.UC_PROT_ALL)
                return True
            self._fault_addr = vaddr
            return False

        def on_sysenter(_uch: Any, _key: Any) -> None:
            # Unicorn runs sysenter in 64-bit mode as a no-op; Linux raises #UD (SIGILL).
            # Called with RIP on the instruction; Unicorn advances it afterwards.
            rip = gpr[RIP]
            self._fault = ("invalid-instruction", f"invalid instruction: sysenter in 64-bit mode "
                           f"at {self.symbolize(rip)} ({rip:#x})")
            self._fault_rip = rip
            self._uc.emu_stop()

        if native.AVAILABLE:
            # The same dispatch in C (emu._native.intr_dispatch): an int3 of the
            # trap table calls its callable without a ctypes trip; the rest is
            # unhandled()'s. KPE_NATIVE=0 keeps on_intr, the reference.
            live = gpr if self.cpu.is_fast else None
            live_rip = ctypes.addressof(live) + 8 * RIP if live is not None else 0  # type: ignore[arg-type]
            self._dispatch = native.Dispatch(traps, unhandled, self.abort,
                                             native.function_address("uc_reg_read"), UC_X86_REG_RIP,
                                             live_rip)
            assert isinstance(traps, _TrapTable)
            traps.dispatch = self._dispatch
            self._hooks.add_native(_uc.UC_HOOK_INTR, native.ADDRESSES["intr_dispatch"],
                                   self._dispatch.address())
        else:
            self._hooks.add(_uc.UC_HOOK_INTR, HOOK_INTR_CFUNC, on_intr)
        self._hooks.add(_uc.UC_HOOK_MEM_UNMAPPED | _uc.UC_HOOK_MEM_PROT,
                        HOOK_MEM_INVALID_CFUNC, on_bad_mem)
        self._hooks.add(_uc.UC_HOOK_INSN, _HOOK_INSN_CFUNC, on_sysenter, 1, 0,
                        ctypes.c_int(UC_X86_INS_SYSENTER))
        self._hooks.add(_uc.UC_HOOK_TLB_FILL, _HOOK_TLB_CFUNC, on_tlb_fill)

    def hook_code(self, addr: int, fn: Callable[..., None], *, raw: bool = False,
                  fast: bool = False) -> int:
        """Call ``fn(addr)`` each time the guest is about to execute ``addr``.

        Takes effect at once, also for code translated earlier. Returns a handle
        for :meth:`unhook`. Inside ``fn`` redirect with
        ``cpu.set_pc_from_code_hook``, never by writing ``cpu.gpr[RIP]``.

        With ``raw=True`` Unicorn calls ``fn(uch, addr, size, key)`` directly
        (one Python frame less on a hot path); ``fn`` must then catch its own
        exceptions and hand them to :meth:`abort`, as ctypes would drop them.
        With ``fast=True`` too, the native core (``emu.native``) calls it as
        ``fn(None, addr, size, None)`` without ctypes when it is built (what
        ``fn`` raises goes to :meth:`abort`); a raw ctypes hook otherwise.
        """
        def on_code(_uch: Any, address: int, _size: int, _key: Any) -> None:
            try:
                fn(address)
            except BaseException as exc:
                self.abort(exc)

        callback = fn if raw else on_code
        with self._owner:
            if raw and fast and native.AVAILABLE:
                hook = native.CodeHook(fn, self.abort)
                handle = self._hooks.add_native(_uc.UC_HOOK_CODE, native.ADDRESSES["code_dispatch"],
                                                hook.address(), addr, addr, keep=hook)
            else:
                handle = self._hooks.add(_uc.UC_HOOK_CODE, HOOK_CODE_CFUNC, callback, addr, addr)
            self._code_hooks[handle] = addr
            self.mem.invalidate_code(addr, addr + 1)
        return handle

    @property
    def clock(self) -> int:
        """The virtual clock in ns: instructions retired while tasks were sliced (or
        every instruction, with :attr:`exact_clock`), and time slept."""
        return self._clock_ns

    @clock.setter
    def clock(self, value: int) -> None:
        self._clock_ns = value
        self._clock.value = min(max(value, 0), KTIME_MAX)

    def set_native_trap(self, addr: int, trap: int, fn: Callback) -> None:
        """``traps[addr] = fn``, and with the native dispatcher (``emu.native``)
        the C function at address ``trap`` too: an int3 at ``addr`` calls
        ``trap(fn, uc, addr)`` first, without the GIL; when it returns 0 (not
        taken), ``fn(addr)`` runs as any trap's. ``fn`` is kept alive by the table."""
        self.traps[addr] = fn
        dispatch = getattr(self, "_dispatch", None)
        if dispatch is not None:
            dispatch.set_native(addr, trap, fn)

    def hook_code_native(self, addr: int, callback: int, user: Any) -> int:
        """:meth:`hook_code` with a C callback at address ``callback`` (a native
        core's ``uc_cb_hookcode_t``), called with ``user.address()`` as its user
        data; ``user`` is kept alive while the hook is. The callback catches its
        own errors (and hands them to :meth:`abort`)."""
        with self._owner:
            handle = self._hooks.add_native(_uc.UC_HOOK_CODE, callback, user.address(), addr, addr,
                                            keep=user)
            self._code_hooks[handle] = addr
            self.mem.invalidate_code(addr, addr + 1)
        return handle

    def unhook(self, handle: int) -> None:
        """Remove a :meth:`hook_code` hook; blocks that called it are retranslated."""
        with self._owner:
            self._hooks.delete(handle)
            addr = self._code_hooks.pop(handle)
            self.mem.invalidate_code(addr, addr + 1)

    def abort(self, exc: BaseException) -> None:
        """Stop the guest; the running :meth:`call` raises ``exc`` (the first one).

        In a counted run the current instruction still completes (a code hook's
        instruction runs, so a resumed run does not hit that probe again); in an
        uncounted one the engine stops at once, before a hooked instruction.
        """
        if self._abort_exc is None:
            self._abort_exc = exc
        if not self.engine.cut():
            self._uc.emu_stop()

    def _paused(self) -> None:
        """The engine stopped: :attr:`on_pause`. What a callback raises stops the
        run as :meth:`abort` would (after an abort already under way)."""
        for fn in self.on_pause:
            try:
                fn()
            except BaseException as exc:
                if self._abort_exc is None:
                    self._abort_exc = exc

    @property
    def aborting(self) -> bool:
        """An exception is waiting to stop the run (see :meth:`abort`)."""
        return self._abort_exc is not None

    def _outermost(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` as this thread's outermost entry into the guest:
        Ctrl-C stops it (:mod:`emu._interrupt`) and it raises KeyboardInterrupt."""
        watched = watch(self.engine)
        try:
            result = fn(*args)
        except BaseException:
            if watched:
                unwatch(self.engine)
            raise
        if watched and unwatch(self.engine):
            raise KeyboardInterrupt      # pressed after the last slice: still this run's
        return result

    @property
    def uc(self) -> Uc:
        """The underlying Unicorn engine. Using it directly bypasses the machine's
        bookkeeping (memory map, patches, caches): for benchmarks and experiments."""
        return self._uc

    @property
    def exit_address(self) -> int:
        """The return address :meth:`call` pushes: reaching it ends the call."""
        return self._exit

    def unwind(self, rip: int, rsp: int, rbp: int, *, at_entry: bool = False,
               recover_ret_addr: Callable[[int, int], int] | None = None) -> list[tuple[int, int | None]]:
        """Unwind by ``.eh_frame`` CFI, by frame pointer where there is none:
        ``[(rip, None), (return address, its stack slot), ...]`` (see :mod:`emu._unwind`).

        Args:
            at_entry: ``rip`` is where a probe at a function's entry was hit, so
                the return address may still be at ``rsp`` (no frame yet).
            recover_ret_addr: ``(address, slot) -> real address`` for return
                addresses a client replaced (a kretprobe trampoline).
        """
        return list(unwind(self, rip, rsp, rbp, at_entry=at_entry, recover_ret_addr=recover_ret_addr))

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

    def read_string(self, addr: int, max: int = 4096) -> str:  # noqa: A002  (the issue's name)
        """The NUL-terminated string at ``addr``, at most ``max`` bytes of it (a
        longer one is cut there), decoded as UTF-8 with undecodable bytes kept as
        surrogates (``os.fsdecode``'s way). Stops quietly at unmapped memory.

        Raises:
            GuestFault: nothing is mapped at ``addr`` itself.
        """
        out = bytearray()
        while len(out) < max:
            at = addr + len(out)
            chunk = min(max - len(out), PAGE - at % PAGE)
            if self.mem.region_at(at) is None:
                if not out:
                    raise GuestFault(f"read_string: nothing is mapped at {addr:#x}", rip=self.cpu.gpr[RIP],
                                     reason="unmapped")
                break
            data = self.mem.read(at, chunk)
            nul = data.find(b"\0")
            if nul >= 0:
                out += data[:nul]
                break
            out += data
        return out.decode("utf-8", errors="surrogateescape")

    def write(self, addr: int, data: bytes) -> None:
        """Write guest memory (translated code there is dropped). Raises EmuError
        while another host thread is inside the machine (see :meth:`exclusive`)."""
        with self._owner:
            self.mem.write(addr, data)

    # --- running --------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """How many :meth:`call` are running (more than one: called from a callback)."""
        return self._depth

    def call(self, func: str | int, *args: int) -> int:
        """Call ``func`` with up to six integer arguments; return RAX, signed.

        Each call starts with the flags the ABI expects (DF, TF and AC clear),
        whatever a fault or a handler left in them.

        Raises:
            SymbolNotFound: ``func`` is an unknown name.
            GuestFault: the guest faulted or exceeded its budget.
            KeyboardInterrupt: Ctrl-C stopped the guest (the machine stays usable).
            EmuError: another host thread is inside this machine, or calls from
                hooks nest deeper than :data:`MAX_CALL_DEPTH`.
        """
        addr = self.resolve(func)
        if len(args) > len(ARG_REGS):
            raise EmuError(f"call({func!r}) takes at most {len(ARG_REGS)} integer arguments, got {len(args)}")
        with self._owner:
            if not self._depth:
                return self._outermost(self._call, addr, args)
            if self._depth >= MAX_CALL_DEPTH:
                raise EmuError(f"call({func!r}) refused: calls from hooks and handlers nest at most "
                               f"{MAX_CALL_DEPTH} deep (Unicorn crashes past 64 nested runs)")
            return self._call(addr, args)

    def _call(self, addr: int, args: tuple[int, ...]) -> int:
        gpr = self.cpu.gpr
        nested = self._depth > 0
        if not nested:
            self._start()
            gpr[RBP] = 0                # the outermost frame: ends frame-pointer chains
        saved = self._uc.context_save() if nested else None
        if not nested:
            self._engine_owner = None       # the registers are this call's now
        top = gpr[RSP] - _RED_ZONE if nested else self.current_task.stack_top - 64
        sp = (top & ~0xF) - 8           # SysV: rsp + 8 is 16-byte aligned at entry
        self.mem.write_u64(sp, self._exit)
        gpr[RSP] = sp
        for reg, value in zip(ARG_REGS, args, strict=False):
            gpr[reg] = value & MASK64
        flags = self.cpu.eflags
        if flags & ABI_CLEAR_FLAGS:
            self.cpu.eflags = flags & ~ABI_CLEAR_FLAGS
        self._depth += 1
        counted = self.engine.save() if nested else None
        task = self.current_task
        for fn in self.on_call_start:
            fn(task)
        try:
            self._run(addr, self._exit, inherit=nested)
            return to_signed64(gpr[RAX])
        finally:
            self._depth -= 1
            if saved is not None:
                self._uc.context_restore(saved)
            if counted is not None:
                self.engine.restore(counted)
            for fn in self.on_call_end:
                fn(task)

    def run(self, *, max_insns: int | None = None, timeout: float | None = None,
            seed: int | None = None, timeslice: int | None = None) -> int:
        """Run the program loaded by :meth:`from_elf` to its end.

        Its threads are tasks of one seeded scheduler (see :meth:`run_tasks`).

        Args:
            max_insns: instruction budget of the whole run (default: none).
            timeout: wall-clock limit in seconds (default: none).
            seed: the scheduler's seed (default: the one given to :meth:`from_elf`).
            timeslice: the longest slice (default: the one given to :meth:`from_elf`).

        Returns:
            The exit status (0..255), or 128 + the signal number when a signal
            ended the process, as a shell reports it.

        Raises:
            GuestFault: the guest faulted, deadlocked or exceeded its budget.
        """
        from .linux import ProcessExit
        kernel = self.kernel
        if kernel is None:
            raise EmuError("run() needs a program: load one with Machine.from_elf")
        if kernel.exited is not None:
            raise EmuError("the program has already run to its exit")
        # Every live thread of every process of the run (a resumed run goes on with all).
        tasks = [t for p in kernel.world.live() for t in p.threads if not t.done]
        sched = Scheduler(self, tasks, seed=self.seed if seed is None else seed,
                          timeslice=self.timeslice if timeslice is None else timeslice,
                          max_insns=max_insns, timeout=timeout, process=True,
                          signals=kernel.signals)
        try:
            self._schedule(sched)
        except ProcessExit as done:
            return done.status
        except GuestFault as fault:
            # A fault or a deadlock ends the process (its files close now); a budget
            # or timeout stop can be resumed, so its files stay open until close().
            if fault.reason not in _RESUMABLE:
                kernel.files.close_all()
                kernel.world.end_all(kernel)
            raise
        finally:
            for p in kernel.world.all:          # the other processes' machines rest too
                if p.m is not self:
                    p.m.sched, p.m._depth = None, 0
            kernel.world.release_dead(None)
        # Every thread ended by exit() without exit_group: the kernel ended the
        # process when the last one went (do_exit -> the group's exit).
        if kernel.exited is not None:
            return kernel.exited.status
        raise EmuError("the program's threads ended without an exit status")  # pragma: no cover

    def _start(self) -> None:
        self.preempt_count = 0          # whatever an aborted run left in flight is dropped
        self._hooks.release_retired()
        for fn in self.on_start:
            fn()

    # --- the engine -------------------------------------------------------------------------
    def _take_abort(self) -> BaseException | None:
        aborted, self._abort_exc = self._abort_exc, None
        return aborted

    def _run(self, begin: int, until: int, *, inherit: bool = False) -> None:
        """Run ``begin`` until ``until`` under this machine's ``max_insns`` and
        ``timeout``. With ``inherit`` (a call from a hook) a counted outer run
        keeps its count hook: an uncounted start would remove it."""
        self._fault = None
        self._fault_addr = None
        self._fault_rip = None
        count = self.max_insns or 0
        if (inherit and self.engine.counting or self.exact_clock) and not count:
            count = UNLIMITED
        timeout_us = int(self.timeout * 1e6) if self.timeout else 0
        error = self.engine.start(begin, until, timeout_us, count)
        retired = self.engine.retired(count)
        if not inherit:
            self.clock += retired       # an outermost call's time
        self._paused()
        aborted = self._take_abort()
        if aborted is not None:
            raise aborted
        if self.engine.interrupted:     # Ctrl-C (emu._interrupt)
            raise KeyboardInterrupt
        fault = self._fault_of(error)
        if fault is not None:
            raise fault
        rip = self.cpu.gpr[RIP]
        if rip != until:
            raise self._stop_of(rip, count, retired)

def _pause_addresses(code: bytes, base: int) -> list[int]:
    """Where ``pause`` instructions start in assembled ``code`` (instruction
    boundaries only, by a linear sweep)."""
    if _PAUSE not in code:
        return []
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    md = Cs(CS_ARCH_X86, CS_MODE_64)
    return [addr for addr, _size, mnemonic, _ops in md.disasm_lite(code, base) if mnemonic == "pause"]
