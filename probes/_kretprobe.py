"""``struct kretprobe`` and ``struct kretprobe_instance`` (kernel/kprobes.c).

A kretprobe is a kprobe on the function entry whose pre_handler is
:meth:`Kretprobe._pre_handler` (the kernel's ``pre_handler_kretprobe``):
take a free instance (none: ``nmissed++``, no entry_handler), run the
entry_handler (non-zero: give the instance back, no return handler for this
call), then hijack the return address (``arch_prepare_kretprobe``) and push the
instance on the task's in-flight list. The return side lives in
:meth:`probes._core.KprobeManager._on_trampoline`.

Memory (issue 12): registration preallocates what the kernel's
``rethook_alloc`` does, ``maxactive * data_size`` bytes for the instances'
data, in one arena (one allocation, so ``ENOMEM`` comes at registration), but
the instance objects are made when a call first needs one: a kretprobe that is
never hit, or hit by one call at a time, costs one arena and no objects.
``rp.nfree`` counts the instances free to take (made or not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from emu import Task
from emu._memory import PROT_RW

from ._cnative import NATIVE
from ._kprobe import Kprobe

if TYPE_CHECKING:
    from ._core import KprobeManager
    from ._regs import PtRegs

__all__ = ["Kretprobe", "KretprobeInstance", "KRETPROBE_MAX_DATA_SIZE", "KRETPROBE_MAXACTIVE_LIMIT"]

KRETPROBE_MAX_DATA_SIZE = 4096          # include/linux/kprobes.h
# The largest instance pool register_kretprobe preallocates (E2BIG above): the
# kernel bounds it only by memory (and trace_kprobe.c's r<N> by 4096), here a
# typo cannot make the host allocate millions of instances.
KRETPROBE_MAXACTIVE_LIMIT = 1 << 16

_NO_ARENA = memoryview(b"")
RetHandler = Callable[["KretprobeInstance", "PtRegs"], Any]
EntryHandler = Callable[["KretprobeInstance", "PtRegs"], "int | None"]


# With the native core an instance is a C struct (probes/_native.c Instance) with
# these same fields, which the C hit paths read and write directly.
_InstanceBase: Any = NATIVE.Instance if NATIVE is not None else object
_INSTANCE_FIELDS = ("rp", "data", "ret_addr", "task", "fp", "gen", "shared")


class KretprobeInstance(_InstanceBase):
    """One in-flight (or free) call record of a kretprobe.

    Attributes:
        rp: the kretprobe.
        data: ``data_size`` private bytes (a ``memoryview`` of the kretprobe's
            arena), preallocated and reused as the kernel does (not cleared
            between calls).
        ret_addr: the real return address of the call.
        task: the task that made the call (None while free).
        fp: guest address of the stack slot holding the (hijacked) return address.
    """

    __slots__ = () if NATIVE is not None else _INSTANCE_FIELDS

    if TYPE_CHECKING:
        rp: Kretprobe
        data: memoryview
        ret_addr: int
        task: Task | None
        fp: int
        gen: int
        shared: bool

    def __init__(self, rp: Kretprobe, data: memoryview, gen: int) -> None:
        self.rp = rp
        self.data = data
        self.ret_addr = 0
        self.task = None
        self.fp = 0
        self.gen = gen
        self.shared = False      # another instance of the same frame is below it

    def __repr__(self) -> str:
        return f"<KretprobeInstance ret_addr={self.ret_addr:#x} fp={self.fp:#x}>"


class _PyRpState:
    """What the hit paths read of a kretprobe (the Python reference of
    probes._native.RpState, which also owns the instances there)."""

    __slots__ = ("gen", "nmissed", "nunwound", "has_handler", "has_entry", "free")

    def __init__(self) -> None:
        self.gen = 0
        self.nmissed = 0
        self.nunwound = 0
        self.has_handler = self.has_entry = False
        self.free: list[KretprobeInstance] = []

    def set_handlers(self, entry_handler: object, handler: object) -> None:
        self.has_entry = entry_handler is not None
        self.has_handler = handler is not None

    def own(self, ri: KretprobeInstance) -> None:
        """Instances are owned by whoever holds them, here."""

    def prune(self) -> None:
        """Nothing to drop: instances of older registrations go with their last reference."""


_RpState: Any = NATIVE.RpState if NATIVE is not None else _PyRpState


def new_stack(task: bool = False, capacity: int = 0) -> Any:
    """An empty list of instances: a free list, or with ``task`` a task's in-flight
    list (a probes._native.Stack the C hit paths use, or a Python list)."""
    return NATIVE.Stack(task, capacity) if NATIVE is not None else []


class Kretprobe:
    """A probe on a function's return.

    Args:
        symbol_name / addr: the function (its entry; exactly one of the two).
        handler: ``handler(ri, regs)`` when the function returns.
        entry_handler: ``entry_handler(ri, regs) -> int | None`` at entry;
            non-zero skips the return handler for that call.
        data_size: bytes of ``ri.data`` per instance (at most 4096).
        maxactive: instances preallocated; ``<= 0`` means 10 (the kernel's
            ``max(10, 2 * NR_CPUS)`` with one CPU), at most 65536
            (:data:`KRETPROBE_MAXACTIVE_LIMIT`). ``rp.maxactive`` shows the
            effective value once registered.

    Counters (reset by registration): ``nmissed``, entries that found no free
    instance (or hit while another handler ran); ``nunwound``, instances taken
    back without a return handler because their frame will never return: it was
    unwound past (``longjmp``, a ``call`` that ended without returning through
    it) or its task ended inside the function. (A System V tail call is not
    unwinding: the callee inherits the caller's hijacked return slot, and both
    handlers run at the one real return, the callee's first.) The kernel leaks the latter until the task exits
    (``rethook_flush_task``); here the free list stays whole.
    """

    def __init__(self, symbol_name: str | None = None, addr: int | None = None,
                 handler: RetHandler | None = None, entry_handler: EntryHandler | None = None,
                 data_size: int = 0, maxactive: int = 0) -> None:
        # Counters, generation, free list and what the handlers are: where the
        # hit paths read them (probes._native.RpState with the native core).
        self._c = _RpState()
        self._handler = handler
        self._entry_handler = entry_handler
        self._c.set_handlers(entry_handler, handler)
        self.data_size = data_size
        self.maxactive = maxactive
        self.kp = Kprobe(symbol_name=symbol_name, addr=addr, pre_handler=self._pre_handler)
        self.kp._kretprobe = self
        self._mgr: KprobeManager | None = None
        self._spare = 0                 # instances of the arena not made yet
        self._arena = _NO_ARENA

    @property
    def handler(self) -> RetHandler | None:
        return self._handler

    @handler.setter
    def handler(self, fn: RetHandler | None) -> None:
        self._handler = fn
        self._c.set_handlers(self._entry_handler, fn)

    @property
    def entry_handler(self) -> EntryHandler | None:
        return self._entry_handler

    @entry_handler.setter
    def entry_handler(self, fn: EntryHandler | None) -> None:
        self._entry_handler = fn
        self._c.set_handlers(fn, self._handler)

    @property
    def nmissed(self) -> int:
        return int(self._c.nmissed)

    @nmissed.setter
    def nmissed(self, value: int) -> None:
        self._c.nmissed = value

    @property
    def nunwound(self) -> int:
        return int(self._c.nunwound)

    @nunwound.setter
    def nunwound(self, value: int) -> None:
        self._c.nunwound = value

    @property
    def _gen(self) -> int:
        return int(self._c.gen)

    @_gen.setter
    def _gen(self, value: int) -> None:
        self._c.gen = value

    @property
    def _free(self) -> Any:
        return self._c.free

    @_free.setter
    def _free(self, stack: Any) -> None:
        self._c.free = stack

    @property
    def symbol_name(self) -> str | None:
        return self.kp.symbol_name

    @property
    def addr(self) -> int | None:
        return self.kp.addr

    @property
    def registered(self) -> bool:
        return self.kp._mgr is not None

    @property
    def nfree(self) -> int:
        """Instances free to take: back on the free list, or not made yet."""
        return len(self._free) + self._spare

    def _alloc_pool(self) -> None:
        """Preallocate the instances' data (``MemoryError``: nothing changed)."""
        arena = memoryview(bytearray(self.maxactive * self.data_size))
        self._gen += 1
        self._arena = arena
        self._free = new_stack()
        self._c.prune()
        self._spare = self.maxactive

    def _drop_pool(self) -> None:
        self._free = new_stack()
        self._spare = 0
        self._arena = _NO_ARENA

    def _make_instance(self) -> KretprobeInstance | None:
        """A new instance from the arena, if one is left (the general entry path
        calls this when the free list is empty)."""
        if not self._spare:
            return None
        self._spare -= 1
        at = self._spare * self.data_size
        ri = KretprobeInstance(self, self._arena[at:at + self.data_size], self._gen)
        self._c.own(ri)
        return ri

    def _pre_handler(self, kp: Kprobe, regs: PtRegs) -> int:
        mgr = self._mgr
        assert mgr is not None
        free = self._free
        if not free:
            # Instances of frames that are gone (longjmp, aborted call) come back first.
            mgr.rethook.inflight_of(mgr.m.current_task, regs.rsp)
        ri = free.pop() if free else self._make_instance()
        if ri is None:
            self.nmissed += 1
            return 0
        entry = self.entry_handler
        if entry is not None:
            ri.task = mgr.m.current_task
            try:
                skip = entry(ri, regs)
            except BaseException:
                ri.task = None
                free.append(ri)
                raise
            if skip:
                ri.task = None
                free.append(ri)
                return 0
        self._prepare(mgr, ri, regs)
        return 0

    def _prepare(self, mgr: KprobeManager, ri: KretprobeInstance, regs: PtRegs) -> None:
        """``arch_prepare_kretprobe()`` plus the push on the task's list. A return
        address the CPU could not read and write (a stack pointer into a hole or
        a read-only page) is left alone, as ``arch_uretprobe_hijack_return_addr``
        fails: the instance goes back, counted in ``nunwound``, and the guest's own
        access faults as it would unprobed."""
        task = ri.task = mgr.m.current_task
        sp = regs.rsp
        if mgr.m.mem.span(sp, 8, PROT_RW) < 8:
            ri.task = None
            self._free.append(ri)
            self.nunwound += 1
            return
        stack = mgr.rethook.inflight_of(task, sp)
        ret = mgr.m.mem.read_u64(sp)
        ri.shared = bool(stack) and stack[-1].fp == sp
        if ri.shared:
            ret = stack[-1].ret_addr     # another kretprobe on this entry hijacked it first
        ri.ret_addr = ret
        ri.fp = sp
        mgr.m.mem.write_u64(sp, mgr.trampoline)
        stack.append(ri)

    def __repr__(self) -> str:
        where = self.kp.symbol_name or (f"{self.kp.addr:#x}" if self.kp.addr is not None else "?")
        state = "registered" if self.registered else "unregistered"
        return (f"<Kretprobe {where} maxactive={self.maxactive} "
                f"nmissed={self.nmissed} nunwound={self.nunwound} {state}>")
