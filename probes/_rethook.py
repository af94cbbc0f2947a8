"""The kretprobe return side, and the fast path of a kretprobe's entry
(kernel/trace/rethook.c, ``pre_handler_kretprobe`` in kernel/kprobes.c).

Invariants:
- ``inflight[task]`` is the task's stack of hijacked calls, outermost first, so
  ``fp`` (the stack address of the hijacked return address) decreases towards
  the top. Instances of one frame (several kretprobes on one function) are
  adjacent and share ``fp``; the first pushed holds the real return address.
- ``ri.shared`` marks an instance pushed on a frame that already had one (a
  second kretprobe on the same function), so the return fast path can tell a
  lone instance with one attribute.
- ``ri.gen != rp._gen`` means the kretprobe was unregistered (or registered
  anew) since the instance was taken: the call returns, no handler runs.
- An instance whose ``fp`` is below the current frame belongs to a frame that
  was unwound past without returning (longjmp, a call aborted by a handler
  exception): it is reclaimed when the task enters or returns above it, and
  counted in ``rp.nunwound``. When a task ends, whatever it still holds is
  reclaimed the same way (:meth:`Rethook.task_exit`, the kernel's
  ``rethook_flush_task``).
- ``inflight`` is keyed by task, never by "the stack": the trampoline of one
  task never consumes another's instance, whatever the scheduler interleaves.
- The fast paths handle only the common shape (one kretprobe on the entry, one
  instance per frame, no stale instance) and hand everything else to the
  general code, so both give the same results; the tests run both.
"""

from __future__ import annotations

import errno
import mmap
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from emu import Task
from emu._regtable import RIP, RSP, UC_ID

from ._cnative import ADDRESSES
from ._errors import ProbeError
from ._kretprobe import new_stack

if TYPE_CHECKING:
    from ._core import KprobeManager, _Site
    from ._kretprobe import Kretprobe, KretprobeInstance

__all__ = ["Rethook"]

_U64 = struct.Struct("<Q")


class Rethook:
    def __init__(self, mgr: KprobeManager) -> None:
        self.mgr = mgr
        self.inflight: dict[Task, list[KretprobeInstance]] = {}
        self.trampoline = mgr.arch.trampoline
        self.addr = self.trampoline.addr
        if mgr.native is not None:           # the hit paths in C (probes/_native.c)
            self._native_core()
        else:
            mgr.m.hook_code(self.addr, self._trampoline_hook(), raw=True, fast=True)
        mgr.m.on_task_exit.append(self.task_exit)
        mgr.m.on_call_start.append(self._call_start)
        mgr.m.on_call_end.append(self._call_end)
        self._call_marks: list[int] = []     # in-flight depth of the task at each call()

    def _native_core(self) -> None:
        """Make the manager's native state and hook the trampoline in C."""
        mgr = self.mgr
        buf, off = self.trampoline.cell_buffer()
        cell = self.trampoline.region.ptr + off
        m = mgr.m
        hits = m._hits                       # the preemption countdown (emu.native.Cell)
        counting, counter = m.engine.clock_cells()
        mgr.core = mgr.native.Core(m, mgr, mgr.regs, mgr._rw_span, self._trampoline_general,
                                   m.abort, mgr.handler_failed, self.addr, cell, buf, UC_ID["rip"],
                                   hits.address(), hits, m._clock.address(), counting, counter,
                                   (m._clock, m.engine))
        mgr.core.rspan = mgr._r_span
        mgr.m.hook_code_native(self.addr, ADDRESSES["tramp_code"], mgr.core)
        mgr.m.on_switch.append(self._switched)
        self._switched(mgr.m.current_task)

    def _switched(self, task: Task) -> None:
        """The machine's current task changed: the C paths use its in-flight list."""
        stack = self.inflight.get(task)
        if stack is None:
            stack = self.inflight[task] = new_stack(task=True)
        self.mgr.core.switch(task, stack, self.mgr.m.sched is not None)

    def inflight_of(self, task: Task, sp: int) -> list[KretprobeInstance]:
        """The task's in-flight instances, after reclaiming those whose frames are
        gone at a function entry with return-address slot ``sp``: frames below
        it, and one at ``sp`` itself unless this very call was just hijacked by
        another kretprobe on the same entry."""
        stack = self.inflight.get(task)
        if stack is None:
            stack = self.inflight[task] = new_stack(task=True)
        read_u64 = self.mgr.m.mem.read_u64
        while stack and stack[-1].fp <= sp:
            if stack[-1].fp == sp and read_u64(sp) == self.addr:
                break
            self.recycle(stack.pop(), unwound=True)
        return stack

    def _call_start(self, task: Task) -> None:
        self._call_marks.append(len(self.inflight.get(task, ())))

    def _call_end(self, task: Task) -> None:
        """A call() is over: instances it left (frames a longjmp skipped, a call a
        fault or a handler's exception aborted) will never see their return."""
        mark = self._call_marks.pop() if self._call_marks else 0
        stack = self.inflight.get(task)
        while stack and len(stack) > mark:
            self.recycle(stack.pop(), unwound=True)

    def task_exit(self, task: Task) -> None:
        """``task`` ended: its in-flight instances will never see a return."""
        # Emptied in place, not dropped: the fast paths cache the list of the
        # last task they saw (the main task of a program may call again later).
        stack = self.inflight.get(task)
        while stack:
            self.recycle(stack.pop(), unwound=True)

    @staticmethod
    def recycle(ri: KretprobeInstance, unwound: bool = False) -> None:
        ri.task = None
        rp = ri.rp
        if ri.gen == rp._gen:
            rp._free.append(ri)
            if unwound:
                rp.nunwound += 1

    # --- the trampoline ---------------------------------------------------------------
    def _trampoline_hook(self) -> Callable[..., None]:
        mgr, m, inflight, regs = self.mgr, self.mgr.m, self.inflight, self.mgr.regs
        gpr = mgr._gpr
        cell_buf, cell_off = self.trampoline.cell_buffer()
        pack_into = _U64.pack_into
        general = self._trampoline_general
        failed = mgr.handler_failed
        abort, preempt = m.abort, m.preempt_point
        set_pc = m.cpu.set_pc_from_code_hook

        c_task: Task | None = None           # the last task seen, and its stack
        c_stack: list[KretprobeInstance] | None = None

        def on_trampoline(_uch: object, _addr: int, _size: int, _key: object) -> None:
            nonlocal c_task, c_stack
            try:
                slot = gpr[RSP] - 8        # where the hijacked return address was
                task = m.current_task
                if task is not c_task or c_stack is None:
                    c_task, c_stack = task, inflight.get(task)
                stack = c_stack
                if not stack:
                    return general(slot)
                ri = stack[-1]
                if ri.fp != slot or ri.shared:
                    return general(slot)
                stack.pop()
                rp = ri.rp
                real = ri.ret_addr
                # The generation changes when rp is unregistered: then no handler.
                current = ri.gen == rp._gen
                handler = rp.handler
                if mgr.running:
                    rp.nmissed += 1
                elif current and handler is not None:
                    mgr.running = True
                    regs._rip = real
                    regs._dirty = None
                    try:
                        handler(ri, regs)
                    except BaseException as exc:
                        regs._dirty = None
                        failed(exc, handler)
                        mgr.running = False
                        ri.task = None
                        if current:
                            rp._free.append(ri)
                        pack_into(cell_buf, cell_off, real)
                        set_pc(real)         # stopping before the jmp: resume past it
                        return
                    if regs._dirty is not None:
                        real = regs._commit()
                    mgr.running = False
                ri.task = None
                if current:
                    rp._free.append(ri)
                pack_into(cell_buf, cell_off, real)
                if m.sched is not None:      # the scheduler may switch tasks at a hit
                    preempt()
            except BaseException as exc:    # a bug here, not a handler's: stop the guest
                abort(exc)
        return on_trampoline

    def _trampoline_general(self, slot: int) -> None:
        """``__kretprobe_trampoline_handler()``: every instance of this frame."""
        mgr = self.mgr
        stack = self.inflight.get(mgr.m.current_task)
        # The returning frame is the outermost instance at or below ``slot``: a
        # ``ret imm16`` pops its argument bytes too, so the hijacked slot may lie up
        # to 64 KiB below; instances deeper than it are frames unwound past.
        fp = _returning_fp(stack, slot) if stack else None
        if stack is None or fp is None:
            mgr.m.abort(ProbeError(errno.EFAULT,
                                   f"return through the kretprobe trampoline at sp={slot:#x} "
                                   "with no instance for that frame: the guest stack was corrupted"))
            return
        while stack[-1].fp < fp:
            self.recycle(stack.pop(), unwound=True)
        frame = [stack.pop()]
        while stack and stack[-1].fp == fp:
            frame.append(stack.pop())
        real = frame[-1].ret_addr
        if mgr.running:
            for ri in frame:
                ri.rp.nmissed += 1
        else:
            mgr.running = True
            regs = mgr.regs
            regs._reset(real)
            for ri in frame:        # innermost first, as the kernel walks its list
                rp = ri.rp
                if rp.handler is not None and ri.gen == rp._gen:
                    mgr.call_handler(rp.handler, ri, regs)
            real = regs._rip
            mgr.running = False
        for ri in frame:
            self.recycle(ri)
        self.trampoline.set_return(real)
        if mgr.m.aborting:                   # stopping before the jmp: resume past it
            mgr.m.cpu.set_pc_from_code_hook(real)
        if mgr.m.sched is not None:
            mgr.m.preempt_point()

    # --- the entry ----------------------------------------------------------------------
    def entry_fast_path(self, site: _Site, rp: Kretprobe, general: Callable[[int], None],
                        optimized: bool) -> Callable[..., None]:
        """The trap (or raw code hook) of a site whose only enabled probe is
        ``rp.kp``: ``pre_handler_kretprobe`` + ``arch_prepare_kretprobe`` + the
        step, inline."""
        mgr, m, inflight, regs = self.mgr, self.mgr.m, self.inflight, self.mgr.regs
        gpr, tramp = mgr._gpr, self.addr
        unpack_from, pack_into = _U64.unpack_from, _U64.pack_into
        failed = mgr.handler_failed
        ainsn = site.ainsn
        emulate = ainsn.emulate
        boost = ainsn.slot.boost_addr if ainsn.slot is not None else 0

        addr = site.addr
        abort, preempt = m.abort, m.preempt_point

        # Called as trap(addr) for int3 or raw hook(uch, addr, size, key) when
        # optimized: the address is known, so the arguments are ignored.
        # The last task seen, its instance stack and its stack memory: one identity
        # check instead of a dict lookup and four attribute loads per hit.
        c_task: Task | None = None
        c_region: object = None
        c_stack: list[KretprobeInstance] = []
        c_buf: mmap.mmap | memoryview = memoryview(b"")
        c_start = c_limit = 0

        def kretprobe_entry(*args: object) -> None:
            nonlocal c_task, c_region, c_stack, c_buf, c_start, c_limit
            if site.handler is not kretprobe_entry:   # re-served during a run: see _serve
                return site.handler(*args) if site.handler is not None else None
            try:
                free = rp._free
                task = m.current_task
                region = task.stack
                if task is not c_task or region is not c_region:
                    stack = inflight.get(task)
                    if stack is None:
                        return general(addr)     # the task's first call: the general path
                    c_task, c_region, c_stack = task, region, stack
                    c_buf, c_start, c_limit = region.buf, region.start, region.end - region.start - 8
                stack = c_stack
                sp = gpr[RSP]
                off = sp - c_start
                # Uncommon shapes go the general way: a miss or a nested hit, stale
                # frames below this one, a stack pointer outside the task's stack.
                if (mgr.running or not free or (stack and stack[-1].fp <= sp)
                        or not 0 <= off <= c_limit):
                    return general(addr)
                ri = free.pop()
                ri.task = task
                hijack = True
                entry = rp.entry_handler
                if entry is not None:
                    mgr.running = True
                    regs._rip = addr
                    regs._dirty = None
                    try:
                        skip = entry(ri, regs)
                    except BaseException as exc:
                        regs._dirty = None
                        failed(exc, entry)
                        skip = 1
                    else:
                        if regs._dirty is not None:
                            regs._commit()
                            if gpr[RSP] != sp:   # the handler moved the stack: go general
                                hijack = False
                                if not skip:
                                    rp._prepare(mgr, ri, regs)
                    mgr.running = False
                    if skip:             # the instance goes back: no return handler
                        ri.task = None
                        free.append(ri)
                        hijack = False
                if hijack:
                    ri.ret_addr = unpack_from(c_buf, off)[0]
                    ri.fp = off + c_start
                    ri.shared = False
                    pack_into(c_buf, off, tramp)
                    stack.append(ri)
                if not optimized:
                    gpr[RIP] = emulate() if emulate is not None else boost
                if m.sched is not None:      # the scheduler may switch tasks at a hit
                    preempt()
            except BaseException as exc:    # a bug here, not a handler's: stop the guest
                abort(exc)
        return kretprobe_entry


_RET_IMM_MAX = 0xFFFF


def _returning_fp(stack: list[KretprobeInstance], slot: int) -> int | None:
    """The ``fp`` of the frame returning through the trampoline with ``rsp - 8 ==
    slot``: the highest ``fp`` in ``[slot - 0xffff, slot]`` (``ret`` or ``ret imm16``)."""
    for ri in stack:                 # outermost (highest fp) first
        if slot - _RET_IMM_MAX <= ri.fp <= slot:
            return ri.fp
    return None
