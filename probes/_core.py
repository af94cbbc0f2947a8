"""The generic kprobes core of one machine (kernel/kprobes.c analogue).

Invariants:
- ``sites`` maps an address to its :class:`_Site` (the kernel's aggregate
  probe): every registered kprobe at that address is a child, in registration
  order. The site's int3 is planted iff some child is enabled and the global
  switch (``arm_all``) is on.
- ``running`` is ``kprobe_running()``: True from a trap until its handlers and
  single-step are done. A probe hit while it is True (a handler called into the
  guest) runs no handler and counts in ``nmissed`` of each child
  (``kprobes_inc_nmissed_count``); its instruction is still stepped.
- A site or slot removed while a step may still use it is only released once
  no step can reach it (the kernel waits for RCU; we count pending steps and
  recycle slots only while the guest is stopped).
- Handlers run under ``_call``: their register writes apply when they return
  normally; an exception is handed to the machine (the running ``call`` raises
  it) and the probe mechanics still complete, so the guest state stays whole.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from emu import Machine, Task
from emu._memory import PROT_X
from emu._regtable import RIP, RSP

from ._errors import ProbeError
from ._kprobe import KPROBE_FLAG_DISABLED, KPROBE_FLAG_OPTIMIZED, Kprobe
from ._regs import PtRegs
from .arch.x86_64 import X86_64, ArchInsn

if TYPE_CHECKING:
    from ._kretprobe import KretprobeInstance

__all__ = ["KprobeManager", "get_manager"]

_EXT_KEY = "probes.kprobes"


class _Site:
    __slots__ = ("addr", "ainsn", "probes", "active", "posts", "mode", "hook", "pending", "dead")

    def __init__(self, addr: int, ainsn: ArchInsn) -> None:
        self.addr = addr
        self.ainsn = ainsn
        self.probes: list[Kprobe] = []
        self.active: tuple[Kprobe, ...] = ()     # enabled children, registration order
        self.posts: tuple[Kprobe, ...] = ()      # enabled children with a post_handler
        self.mode: str | None = None             # None (disarmed), "int3" or "optimized"
        self.hook: int | None = None             # code hook handle while optimized
        self.pending: list[bool] = []            # out-of-line steps in flight (reenter?)
        self.dead = False

    def refresh(self) -> None:
        self.active = tuple(p for p in self.probes if not p.flags & KPROBE_FLAG_DISABLED)
        self.posts = tuple(p for p in self.active if p.post_handler is not None)


def get_manager(m: Machine) -> KprobeManager:
    mgr = m.extensions.get(_EXT_KEY)
    if mgr is None:
        mgr = m.extensions[_EXT_KEY] = KprobeManager(m)
    return mgr


class KprobeManager:
    """Probe table, arming, and the trap paths of one machine."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.arch = X86_64(m)
        self.sites: dict[int, _Site] = {}
        self.running = False
        self.armed_all = True
        self.optimize = False
        self.user_blacklist: list[tuple[int, int]] = []
        self.inflight: dict[Task, list[KretprobeInstance]] = {}
        self.regs = PtRegs(m.cpu.gpr, m.cpu, m.mem)
        self._gpr = m.cpu.gpr
        self._read_u64 = m.mem.read_u64
        self.trampoline = self.arch.trampoline.addr
        m.traps[self.trampoline] = self._on_trampoline

    # --- registration ---------------------------------------------------------------
    def resolve(self, kp: Kprobe) -> int:
        """``_kprobe_addr()``: symbol_name xor addr, plus offset."""
        if (kp.symbol_name is None) == (kp.addr is None):
            raise ProbeError(errno.EINVAL, "give exactly one of addr and symbol_name")
        if kp.symbol_name is not None:
            sym = self.m.symbols.get_symbol(kp.symbol_name)
            if sym is None:
                raise ProbeError(errno.ENOENT, f"no symbol {kp.symbol_name!r} in this machine")
            return sym.addr + kp.offset
        return kp.addr + kp.offset  # type: ignore[operator]

    def check_address_safe(self, addr: int) -> None:
        """``check_kprobe_address_safe()``: executable guest code, not blacklisted."""
        region = self.m.mem.region_at(addr)
        if region is None or not region.perms & PROT_X:
            raise ProbeError(errno.EINVAL, f"{addr:#x} is not in executable guest code")
        for start, end in self.arch.blacklist() + self.user_blacklist:
            if start <= addr < end:
                raise ProbeError(errno.EINVAL,
                                 f"{self.m.symbolize(addr)} ({addr:#x}) is on the kprobe blacklist")

    def register(self, kp: Kprobe) -> None:
        if kp._mgr is not None:
            raise ProbeError(errno.EINVAL, f"{kp!r} is already registered")
        addr = self.resolve(kp)
        self.check_address_safe(addr)
        site = self.sites.get(addr)
        if site is None:
            if self.m.depth == 0:
                self.arch.xol.collect()
            site = _Site(addr, self.arch.prepare(addr))
            self.sites[addr] = site
            self.m.traps[addr] = self._trap_for(site)
            if site.ainsn.slot is not None:
                self.m.traps[site.ainsn.slot.step_trap] = self._step_trap_for(site)
        kp.addr = addr
        kp.flags &= KPROBE_FLAG_DISABLED
        kp.nmissed = 0
        kp._mgr = self
        site.probes.append(kp)
        self.update(site)
        if site.mode == "optimized":      # a joining child shares the aggregate's state
            kp.flags |= KPROBE_FLAG_OPTIMIZED

    def unregister(self, kp: Kprobe) -> None:
        """``unregister_kprobe()``: a probe that is not registered here is ignored."""
        if kp._mgr is not self:
            return
        site = self.sites[kp.addr]  # type: ignore[index]
        site.probes.remove(kp)
        kp._mgr = None
        kp.flags &= ~KPROBE_FLAG_OPTIMIZED
        self.update(site)
        if not site.probes:
            del self.sites[site.addr]
            site.dead = True
            self.m.traps.pop(site.addr, None)
            if not site.pending:
                self._release(site)

    def _release(self, site: _Site) -> None:
        slot = site.ainsn.slot
        if slot is not None:
            self.m.traps.pop(slot.step_trap, None)
        self.arch.remove(site.ainsn)

    def update(self, site: _Site) -> None:
        """Recompute the site's enabled children and serve it the right way.

        Armed iff a child is enabled and the global switch is on; then
        optimized (a code hook, no patch: ``try_to_optimize_kprobe``) iff
        optimization is on and no enabled child has a post_handler, else int3.
        """
        site.refresh()
        want: str | None = None
        if site.active and self.armed_all:
            want = "optimized" if self.optimize and not site.posts else "int3"
        if want == site.mode:
            return
        if site.mode == "int3":
            self.arch.disarm(site.addr)
        elif site.mode == "optimized":
            assert site.hook is not None
            self.m.unhook(site.hook)
            site.hook = None
        if want == "int3":
            self.arch.arm(site.addr)
        elif want == "optimized":
            opt_hit = self._opt_hit
            site.hook = self.m.hook_code(site.addr, lambda _addr: opt_hit(site))
        site.mode = want
        for kp in site.probes:
            if want == "optimized":
                kp.flags |= KPROBE_FLAG_OPTIMIZED
            else:
                kp.flags &= ~KPROBE_FLAG_OPTIMIZED

    def update_all(self) -> None:
        for site in list(self.sites.values()):
            self.update(site)

    def site_of(self, kp: Kprobe) -> _Site:
        return self.sites[kp.addr]  # type: ignore[index]

    # --- the trap path --------------------------------------------------------------
    def _trap_for(self, site: _Site) -> Callable[[int], None]:
        hit = self._hit
        return lambda _addr: hit(site)

    def _step_trap_for(self, site: _Site) -> Callable[[int], None]:
        done = self._step_done
        return lambda _addr: done(site)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        regs = self.regs
        try:
            ret = fn(*args)
        except BaseException as exc:
            regs._discard()
            exc.add_note(f"raised by a probe handler {fn!r}")
            self.m.abort(exc)
            return 0
        regs._commit()
        return ret

    def _hit(self, site: _Site) -> None:
        if self.running:
            for kp in site.active:
                kp.nmissed += 1
            self._single_step(site, reenter=True)
            return
        self.running = True
        regs = self.regs
        regs._reset(site.addr)
        call = self._call
        for kp in site.active:
            if kp.pre_handler is not None and call(kp.pre_handler, kp, regs):
                # The handler changed regs.rip: resume there (reset_current_kprobe).
                self._gpr[RIP] = regs._rip
                self.running = False
                return
        self._single_step(site, reenter=False)

    def _opt_hit(self, site: _Site) -> None:
        """An optimized probe: a code hook before the instruction, which then runs
        in place (``optimized_callback``): no patch, no single-step, no RIP write
        unless a pre_handler moved ``regs.rip``."""
        if self.running:
            for kp in site.active:
                kp.nmissed += 1
            return
        self.running = True
        regs = self.regs
        regs._reset(site.addr)
        call = self._call
        for kp in site.active:
            if kp.pre_handler is not None and call(kp.pre_handler, kp, regs):
                self.running = False
                self.m.cpu.set_pc_from_code_hook(regs._rip)
                return
        self.running = False

    def _single_step(self, site: _Site, reenter: bool) -> None:
        ainsn = site.ainsn
        gpr = self._gpr
        if ainsn.emulate is not None:
            nxt = ainsn.emulate()
            if reenter or not site.posts:
                gpr[RIP] = nxt
                if not reenter:
                    self.running = False
                return
            self._post(site, nxt)
            return
        slot = ainsn.slot
        assert slot is not None
        if reenter or not site.posts:
            gpr[RIP] = slot.boost_addr
            if not reenter:
                self.running = False
            return
        site.pending.append(reenter)
        gpr[RIP] = slot.step_addr

    def _step_done(self, site: _Site) -> None:
        """The int3 after a single-stepped copy: fix RIP up, run post handlers."""
        reenter = site.pending.pop()
        nxt = site.addr + site.ainsn.size
        if site.dead and not site.pending:
            self._release(site)
        if reenter:
            self._gpr[RIP] = nxt
        else:
            self._post(site, nxt)

    def _post(self, site: _Site, nxt: int) -> None:
        regs = self.regs
        regs._reset(nxt)
        call = self._call
        for kp in site.posts:
            call(kp.post_handler, kp, regs, 0)
        self._gpr[RIP] = regs._rip
        self.running = False

    # --- kretprobe return path --------------------------------------------------------
    def inflight_of(self, task: Task, sp: int) -> list[KretprobeInstance]:
        """The task's in-flight instances, after reclaiming those whose frames are
        gone at a function entry with return-address slot ``sp``: frames below
        it, and one at ``sp`` itself unless this very call was just hijacked by
        another kretprobe on the same entry."""
        stack = self.inflight.get(task)
        if stack is None:
            stack = self.inflight[task] = []
        while stack and stack[-1].fp <= sp:
            if stack[-1].fp == sp and self._read_u64(sp) == self.trampoline:
                break
            self.recycle(stack.pop())
        return stack

    def recycle(self, ri: KretprobeInstance) -> None:
        ri.task = None
        rp = ri.rp
        if ri.gen == rp._gen:
            rp._free.append(ri)

    def _on_trampoline(self, _addr: int) -> None:
        """``__kretprobe_trampoline_handler()``: run this frame's return handlers."""
        slot_addr = self._gpr[RSP] - 8      # where the hijacked return address was
        task = self.m.current_task
        stack = self.inflight.get(task)
        recycle = self.recycle
        # Instances below this frame were unwound past (longjmp, aborted call).
        while stack and stack[-1].fp < slot_addr:
            recycle(stack.pop())
        if not stack or stack[-1].fp != slot_addr:
            self.m.abort(ProbeError(errno.EFAULT,
                                    f"return through the kretprobe trampoline at sp={slot_addr:#x} "
                                    "with no instance for that frame: the guest stack was corrupted"))
            return
        frame = [stack.pop()]
        while stack and stack[-1].fp == slot_addr:
            frame.append(stack.pop())
        real = frame[-1].ret_addr
        if self.running:
            for ri in frame:
                ri.rp.nmissed += 1
        else:
            self.running = True
            regs = self.regs
            regs._reset(real)
            call = self._call
            for ri in frame:        # innermost first, as the kernel walks its list
                rp = ri.rp
                if rp.handler is not None and ri.gen == rp._gen and rp.kp._mgr is self:
                    call(rp.handler, ri, regs)
            real = regs._rip
            self.running = False
        for ri in frame:
            recycle(ri)
        self.arch.trampoline.set_return(real)
