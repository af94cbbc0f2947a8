"""The generic kprobes core of one machine (kernel/kprobes.c analogue).

Invariants:
- ``sites`` maps an address to its :class:`_Site` (the kernel's aggregate
  probe): every registered kprobe at that address is a child, in registration
  order. The site is served (an int3, or a code hook when optimized) iff some
  child is enabled and the global switch (``arm_all``) is on; its callback
  (``site.handler``) is rebuilt whenever its enabled children change.
- ``running`` is ``kprobe_running()``: True from a trap until its handlers and
  single-step are done. A probe hit while it is True (a handler called into the
  guest) runs no handler and counts in ``nmissed`` of each child
  (``kprobes_inc_nmissed_count``); its instruction is still stepped.
- A site or slot removed while a step may still use it is only released once
  no step can reach it (the kernel waits for RCU; we count pending steps and
  recycle slots only while the guest is stopped).
- A site whose code is unmapped is *gone* (``kill_kprobe``): its children get
  ``KPROBE_FLAG_GONE``, count as disabled, and nothing is written where the code
  was; the site stays in ``sites`` until its probes are unregistered. A probe
  registered there later (new code mapped) gets a fresh site that adopts the
  gone children (``register_aggr_kprobe`` re-preparing a gone aggregate).
- A handler's register writes apply when it returns normally; an exception is
  handed to the machine (the running ``call`` raises it) and the probe
  mechanics still complete, so the guest state stays whole. State a stopped
  run leaves half done is dropped before the next outermost call
  (:meth:`KprobeManager._reset_transient`).
"""

from __future__ import annotations

import bisect
import errno
from collections.abc import Callable
from typing import Any

from emu import Machine, Task
from emu._memory import PROT_RW, PROT_X
from emu._regtable import RIP

from ._cnative import ADDRESSES, for_machine
from ._errors import ProbeError
from ._kprobe import KPROBE_FLAG_DISABLED, KPROBE_FLAG_GONE, KPROBE_FLAG_OPTIMIZED, Kprobe
from ._regs import regs_for
from ._rethook import Rethook
from .arch.x86_64 import X86_64, ArchInsn
from .arch.x86_64._emulate import shape_of

__all__ = ["KprobeManager", "get_manager"]

_NO_HOOK = -1           # site.hook of an optimized site that has nothing to run

_EXT_KEY = "probes.kprobes"

# Unicorn walks its whole list of code hooks for every hooked instruction, so
# each optimized probe makes every other optimized hit slower (about 3 ns a
# hook: 2.9 us a hit with 1,000): past this many, further probes stay int3 (O(1) dispatch by address).
MAX_OPTIMIZED = 32

# kprobe_disabled(): a gone probe never fires either.
_NOT_FIRING = KPROBE_FLAG_DISABLED | KPROBE_FLAG_GONE


class _Site:
    __slots__ = ("addr", "ainsn", "probes", "active", "posts", "mode", "hook", "handler",
                 "hooked", "pending", "gone")

    def __init__(self, addr: int, ainsn: ArchInsn) -> None:
        self.addr = addr
        self.ainsn = ainsn
        self.probes: list[Kprobe] = []
        self.active: tuple[Kprobe, ...] = ()     # enabled children, registration order
        self.posts: tuple[Kprobe, ...] = ()      # enabled children with a post_handler
        self.mode: str | None = None             # None (disarmed), "int3" or "optimized"
        self.hook: int | None = None             # code hook handle while optimized
        self.handler: Callable[..., None] | None = None   # the current hit callback
        self.hooked: Callable[..., None] | None = None    # the one the code hook calls
        self.pending: list[bool] = []            # out-of-line steps in flight (reenter?)
        self.gone = False                        # its code was unmapped

    def refresh(self) -> None:
        self.active = tuple(p for p in self.probes if not p.flags & _NOT_FIRING)
        self.posts = tuple(p for p in self.active if p.post_handler is not None)


def get_manager(m: Machine) -> KprobeManager:
    mgr = m.extensions.get(_EXT_KEY)
    if mgr is None:
        cls = _NativeManager if for_machine(m) is not None else KprobeManager
        mgr = m.extensions[_EXT_KEY] = cls(m)
        from ._follow import follow_processes
        follow_processes(m)
    return mgr


class KprobeManager:
    """Probe table, arming, and the trap paths of one machine."""

    running = False                         # kprobe_running()
    max_optimized = MAX_OPTIMIZED           # sites served by a code hook, at most
    native: Any = None                      # the native core's module (_NativeManager)
    core: Any = None                        # its state of this manager

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.arch = X86_64(m)
        self.sites: dict[int, _Site] = {}
        self._addrs: list[int] = []         # sorted keys of sites
        self.armed_all = True
        self.optimize = False
        self.n_optimized = 0
        # Optimized sites with a code hook of their own, in hooking order (a dict:
        # the adaptive optimizer's choices must not depend on addresses in memory).
        self.hooked: dict[_Site, None] = {}
        self.user_blacklist: list[tuple[int, int]] = []
        self.regs = regs_for(m)
        self.regs.machine = m               # which process's registers (probes._follow)
        self._gpr = m.cpu.gpr
        self._first = self._first_hit          # the trap of every int3 site not hit yet
        self.rethook = Rethook(self)
        self.trampoline = self.rethook.addr
        self.arch.sit_unwinder(self.find_ret_addr)
        self._dying: list[_Site] = []      # unregistered, an out-of-line step pending
        self._stepping: set[_Site] = set()  # sites with an out-of-line step pending
        self._rehook: set[_Site] = set()    # optimized sites re-served during a run
        m.on_start.append(self._reset_transient)
        m.on_task_exit.append(self._task_exit)
        m.mem.on_unmap.append(self._on_unmap)
        m.mem.on_protect.append(self._on_protect)

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
        if site is None or site.gone:
            site = self._new_site(addr, site)
        kp.addr = addr
        kp.flags &= KPROBE_FLAG_DISABLED
        kp.nmissed = 0
        kp._mgr = self
        site.probes.append(kp)
        self.update(site)
        if site.mode == "optimized":      # a joining child shares the aggregate's state
            kp.flags |= KPROBE_FLAG_OPTIMIZED

    def _new_site(self, addr: int, gone: _Site | None) -> _Site:
        """Prepare the instruction at ``addr``; a gone site there hands over its
        (still gone) probes and finishes any step of the old code on its own."""
        if self.m.depth == 0:
            self.arch.xol.collect()
        site = _Site(addr, self.arch.prepare(addr))
        if gone is not None:
            site.probes, gone.probes = gone.probes, []
        else:
            bisect.insort(self._addrs, addr)
        self.sites[addr] = site
        if site.ainsn.slot is not None:
            self.m.traps[site.ainsn.slot.step_trap] = self._step_trap_for(site)
        return site

    def _on_protect(self, start: int, end: int) -> None:
        if self.core is not None:
            self.core.invalidate()

    def _on_unmap(self, start: int, end: int) -> None:
        """``kill_kprobe()`` for each site in ``[start, end)``: its code is going away."""
        if self.core is not None:
            self.core.invalidate()
        lo = bisect.bisect_left(self._addrs, start)
        hi = bisect.bisect_left(self._addrs, end)
        for addr in self._addrs[lo:hi]:
            site = self.sites[addr]
            if site.gone:
                continue
            site.gone = True
            for kp in site.probes:
                kp.flags |= KPROBE_FLAG_GONE
            self.update(site)             # no child fires: disarmed (nothing written), unhooked
            self._retire(site)

    def _retire(self, site: _Site) -> None:
        """Free the site's slot once no out-of-line step can reach it any more."""
        if not site.pending:
            self._release(site)
        elif site not in self._dying:
            self._dying.append(site)

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
            self._addrs.remove(site.addr)
            self.m.traps.pop(site.addr, None)
            self._retire(site)

    def _reset_transient(self) -> None:
        """Before an outermost call: a previous one aborted by a handler exception
        (or a budget) may have left a hit half done. Nothing is in progress now."""
        self.running = False
        for site in self._stepping:
            site.pending.clear()
        self._stepping.clear()
        for site in self._rehook:
            if site.hook is not None and site.hooked is not site.handler:
                self._unhook(site)
                self._hook(site)
        self._rehook.clear()
        for site in self._dying:
            site.pending.clear()
            self._release(site)
        self._dying.clear()

    def _task_exit(self, task: Task) -> None:
        """A task that faulted mid-hit (in a single-stepped copy) leaves the hit
        half done; no other task can be inside one (no switch during a step), so
        what is in flight is its: drop it as an aborted run's (kprobe_fault_handler)."""
        if task.fault is not None and (self.running or self._stepping):
            self._reset_transient()
            self.m.preempt_count = 0

    def _release(self, site: _Site) -> None:
        slot = site.ainsn.slot
        if slot is not None:
            self.m.traps.pop(slot.step_trap, None)
        self.arch.remove(site.ainsn)

    def update(self, site: _Site) -> None:
        """Recompute the site's enabled children and serve it the right way.

        Armed iff a child is enabled and the global switch is on; then
        optimized (a code hook, no patch: ``try_to_optimize_kprobe``) iff
        optimization is on, no enabled child has a post_handler and fewer than
        :data:`MAX_OPTIMIZED` sites are optimized; else int3. The handler is
        chosen anew each time: a site whose only enabled probe is a
        kretprobe's gets the fast entry path.
        """
        site.refresh()
        mode: str | None = None
        if site.active and self.armed_all:
            mode = "optimized" if self._can_optimize(site) else "int3"
        freed = site.mode == "optimized" and mode != "optimized"
        self._serve(site, mode)
        if freed:
            self._promote()

    def _can_optimize(self, site: _Site) -> bool:
        return (self.optimize and not site.posts
                and (site.mode == "optimized" or self.n_optimized < self.max_optimized))

    def _wants_hook(self, site: _Site) -> bool:
        """Optimizing is asked for and the site could be (nothing to single-step)."""
        return self.optimize and not site.posts

    def _serve(self, site: _Site, mode: str | None) -> None:
        if site.mode == "int3" and mode != "int3":
            self.arch.disarm(site.addr)
            self.m.traps.pop(site.addr, None)    # an int3 there later is not ours
        if site.hook is not None and mode != "optimized":
            self._unhook(site)
            site.hook = site.hooked = None
            self.n_optimized -= 1
        if mode == "optimized":
            handler: Callable[..., None] | None = self._handler_for(site, True)
        else:   # int3: the hit path is built at the first hit (most of a big set never is)
            handler = self._first if mode else None
        old, site.handler = site.handler, handler
        if old is not handler and self.native is not None and isinstance(old, self.native.Hit):
            old.stale = True            # a hit in progress hands on to site.handler
        if handler is not None and mode == "int3":
            self._set_trap(site.addr, handler)
            if site.mode != "int3":
                self.arch.arm(site.addr)
        elif mode == "optimized":
            if site.hook is None:
                self.n_optimized += 1
                self._hook(site)
            elif self.m.depth == 0 or site.hook == _NO_HOOK:   # (none of its own in the walk)
                self._unhook(site)
                self._hook(site)
            else:
                # A guest run is in progress, maybe in this very hook's callback:
                # Unicorn would call a hook added now in the same walk of its list
                # (the handlers twice). The hooked callback forwards to
                # site.handler until _reset_transient hooks the new one.
                self._rehook.add(site)
        site.mode = mode
        for kp in site.probes:
            if mode == "optimized":
                kp.flags |= KPROBE_FLAG_OPTIMIZED
            else:
                kp.flags &= ~KPROBE_FLAG_OPTIMIZED

    def _set_trap(self, addr: int, handler: Callable[..., None]) -> None:
        if self.native is not None and isinstance(handler, self.native.Hit):
            self.m.set_native_trap(addr, ADDRESSES["hit_trap"], handler)   # tried without the GIL
        else:
            self.m.traps[addr] = handler

    def _hook(self, site: _Site) -> None:
        assert site.handler is not None
        site.hooked = site.handler
        if not any(kp.pre_handler is not None for kp in site.active):
            # Nothing to run at a hit (no handler, no kretprobe): no hook at all, so
            # the probe costs nothing (issue 12). It is then no preemption point.
            site.hook = _NO_HOOK
            return
        self.hooked[site] = None
        if self.native is not None and isinstance(site.handler, self.native.Hit):
            site.hook = self.m.hook_code_native(site.addr, ADDRESSES["hit_code"], site.handler)
        else:
            site.hook = self.m.hook_code(site.addr, site.handler, raw=True, fast=True)

    def _unhook(self, site: _Site) -> None:
        if site.hook is not None and site.hook != _NO_HOOK:
            self.m.unhook(site.hook)
            self.hooked.pop(site, None)

    def _promote(self) -> None:
        """An optimized slot came free: optimize waiting int3 sites (the kernel's
        optimizer retries unoptimized probes the same way)."""
        if not self.optimize:
            return
        for other in list(self.sites.values()):
            if self.n_optimized >= self.max_optimized:
                return
            if other.mode == "int3" and self._can_optimize(other):
                self._serve(other, "optimized")

    def _first_hit(self, addr: int) -> None:
        """An int3 site's first hit: build its hit path (its closures weigh a
        kilobyte or two a site), serve it from now on, and take this hit. (One
        callable for every site not hit yet, :attr:`_first`, finds it by address.)"""
        site = self.sites[addr]
        handler = self._handler_for(site, False)
        site.handler = handler
        self._set_trap(site.addr, handler)
        handler(addr)

    def _handler_for(self, site: _Site, optimized: bool) -> Callable[..., None]:
        """The site's callback; it takes a trap's or a raw code hook's arguments."""
        only = site.active[0] if len(site.active) == 1 else None
        if only is not None and only._kretprobe is not None:
            general = self._pre_path(site, optimized, forward=False)
            return self.rethook.entry_fast_path(site, only._kretprobe, general, optimized)
        return self._pre_path(site, optimized, forward=True)

    def _rw_span(self, addr: int) -> tuple[int, int, int, object] | None:
        """For the native core: ``(start, end, host address, keep)`` of the
        readable and writable mapping holding ``addr``, or None. ``keep`` holds
        the host memory while the core caches the span (until :meth:`_on_unmap`
        or :meth:`_on_protect` has it forget)."""
        r = self.m.mem.region_at(addr)
        if r is None or r.perms & PROT_RW != PROT_RW or not r.ptr:
            return None
        return r.start, r.end, r.ptr, r.buf

    def _r_span(self, addr: int) -> tuple[int, int, int, object] | None:
        """For the native core's trace fetches: ``(start, end, host address, keep)``
        of the mapping holding ``addr`` when its host bytes are what
        ``Memory.read`` shows (not executable, so no breakpoint is planted in
        it), or None (the fetch reads through Python)."""
        mem = self.m.mem
        r = mem.region_at(addr)
        if r is None or r.perms & PROT_X or not r.ptr or mem.has_patches(r.start, r.end):
            return None
        return r.start, r.end, r.ptr, r.buf

    def find_ret_addr(self, slot: int) -> int | None:
        """``kretprobe_find_ret_addr()``: the real return address the current task's
        kretprobes hijacked at stack address ``slot``, or None."""
        stack = self.rethook.inflight.get(self.m.current_task, [])
        for ri in reversed(stack):
            if ri.fp == slot:
                return ri.ret_addr
        return None

    def handlers_changed(self, kp: Kprobe) -> None:
        """``kp.pre_handler`` was set: serve its site anew."""
        site = self.sites.get(kp.addr) if kp.addr is not None else None
        if site is not None and kp in site.probes:
            self.update(site)

    def update_all(self) -> None:
        for site in list(self.sites.values()):
            self.update(site)

    def site_of(self, kp: Kprobe) -> _Site:
        return self.sites[kp.addr]  # type: ignore[index]

    # --- the trap path --------------------------------------------------------------
    def _step_trap_for(self, site: _Site) -> Callable[[int], None]:
        done = self._step_done
        return lambda _addr: done(site)

    def handler_failed(self, exc: BaseException, fn: Callable[..., Any]) -> None:
        """A handler raised: stop the guest, and have the running call raise it."""
        exc.add_note(f"raised by a probe handler {fn!r}")
        self.m.abort(exc)

    def call_handler(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a handler; its register writes apply if it returns normally."""
        regs = self.regs
        try:
            ret = fn(*args)
        except BaseException as exc:
            regs._discard()
            self.handler_failed(exc, fn)
            return 0
        regs._commit()
        return ret

    def _pre_path(self, site: _Site, optimized: bool, forward: bool) -> Callable[..., None]:
        """The hit of a probe site (``kprobe_int3_handler`` / ``optimized_callback``).

        int3: pre_handlers, then the single-step. Optimized (a code hook before
        the instruction, which then runs in place): pre_handlers only, no RIP
        write unless a pre_handler moved ``regs.rip``. Built anew by
        :meth:`update` whenever the site's enabled children change. With
        ``forward`` it hands a hit to ``site.handler`` once it is no longer
        that (see :meth:`_serve`); the fallback of a fast path does not.
        """
        mgr, regs, gpr, addr, active = self, self.regs, self._gpr, site.addr, site.active
        failed, abort, single_step = self.handler_failed, self.m.abort, self._single_step
        m = self.m
        set_pc, preempt = m.cpu.set_pc_from_code_hook, m.preempt_point

        def on_hit(*args: object) -> None:
            if forward and site.handler is not on_hit:   # re-served during a run: see _serve
                return site.handler(*args) if site.handler is not None else None
            try:
                if mgr.running:          # kprobes_inc_nmissed_count: no handler runs
                    for kp in active:
                        kp.nmissed += 1
                    if not optimized:
                        single_step(site, True)
                    return
                mgr.running = True
                regs._rip = addr
                regs._dirty = None
                for kp in active:
                    pre = kp.pre_handler
                    # A handler earlier in this walk may have disabled kp (or unmapped it).
                    if pre is None or kp.flags & _NOT_FIRING:
                        continue
                    try:
                        moved = pre(kp, regs)
                    except BaseException as exc:
                        regs._dirty = None
                        failed(exc, pre)
                        continue
                    if regs._dirty is not None:
                        regs._commit()
                    if moved:            # resume at regs.rip (reset_current_kprobe)
                        mgr.running = False
                        if optimized:
                            set_pc(regs._rip)
                        else:
                            gpr[RIP] = regs._rip
                        if m.sched is not None:
                            preempt()
                        return
                if optimized:
                    mgr.running = False
                    if site.gone:        # a handler unmapped the code: fetch it anew
                        set_pc(addr)
                else:
                    single_step(site, False)
                if m.sched is not None:      # the scheduler may switch tasks at a hit
                    preempt()
            except BaseException as exc:    # a bug here, not a handler's: stop the guest
                abort(exc)
        return on_hit

    def _single_step(self, site: _Site, reenter: bool) -> None:
        ainsn = site.ainsn
        gpr = self._gpr
        if site.gone:                    # a handler unmapped the code: run what is there now
            gpr[RIP] = site.addr
            if not reenter:
                self.running = False
            return
        if ainsn.emulate is not None:
            nxt = ainsn.emulate()
            if reenter or not site.posts or ainsn.faults_out_of_line(nxt):
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
        self.m.preempt_count += 1        # no task switch until the step is done
        self._stepping.add(site)
        gpr[RIP] = slot.step_addr

    def _step_done(self, site: _Site) -> None:
        """The int3 after a single-stepped copy: fix RIP up, run post handlers."""
        # Empty when a run stopped mid-step (a budget) was resumed after a reset.
        reenter = False
        if site.pending:
            reenter = site.pending.pop()
            self.m.preempt_count = max(0, self.m.preempt_count - 1)
        if not site.pending:
            self._stepping.discard(site)
        nxt = site.addr + site.ainsn.size
        if not site.pending and site in self._dying:      # unregistered meanwhile
            self._dying.remove(site)
            self._release(site)
        if reenter:
            self._gpr[RIP] = nxt
        else:
            self._post(site, nxt)
            if self.m.sched is not None:
                self.m.preempt_point()

    def _post(self, site: _Site, nxt: int) -> None:
        regs = self.regs
        regs._reset(nxt)
        call = self.call_handler
        for kp in site.posts:
            assert kp.post_handler is not None      # site.posts holds only those
            call(kp.post_handler, kp, regs, 0)
        self._gpr[RIP] = regs._rip
        self.running = False


# The adaptive optimizer of the native core: int3 dispatch in C is flat in the
# number of probes (a hash lookup, about 0.05 us), a code hook costs 0.003 us but
# Unicorn walks every hook at every hooked instruction (about 3 ns a hook). So a
# few hooks go to the hot sites: an int3 site that wants one asks after
# PROMOTE_AFTER hits; every TIDY_EVERY hooked hits the idle hooks go back to int3.
NATIVE_MAX_OPTIMIZED = 8
PROMOTE_AFTER = 256
TIDY_EVERY = 4096


class _NativeManager(KprobeManager):
    """The manager whose hit paths are C (probes/_native.c, issue 12): the same
    sites and state, with ``running`` kept where the C code reads it. Sites
    whose shape the C paths take get a native ``Hit`` as their handler; every
    uncommon case inside a hit goes to the Python paths above."""

    max_optimized = NATIVE_MAX_OPTIMIZED

    def __init__(self, m: Machine) -> None:
        self.native = for_machine(m)
        super().__init__(m)        # the Rethook makes self.core
        self.core.on_hot = self._hot
        self.core.on_tidy = self._tidy
        self.core.tidy_every = TIDY_EVERY
        self._tidy_due = False
        m.on_start.append(self._safe_point)
        m.on_switch.append(self._safe_point)

    @property
    def running(self) -> bool:
        return bool(self.core.running)

    @running.setter
    def running(self, value: bool) -> None:
        self.core.running = value

    def _handler_for(self, site: _Site, optimized: bool) -> Callable[..., None]:
        only = site.active[0] if len(site.active) == 1 else None
        rp = only._kretprobe if only is not None else None
        if rp is None and site.posts and not optimized:
            return super()._handler_for(site, optimized)      # the single-step: Python
        kind, reg, arg, emulate = self._step_of(site.ainsn, optimized)
        pres = [kp.pre_handler for kp in site.active if kp.pre_handler is not None]
        natives = (self.native.Count, self.native.Trace)
        counts = (tuple(pres) if rp is None and all(type(p) in natives for p in pres)
                  else None)                     # counted and traced in C, without the GIL
        hit = self.native.Hit(self.core, site, site.active, self._pre_path(site, optimized, forward=False),
                              site.addr, optimized, kind, site.addr + site.ainsn.size,
                              site.ainsn.slot.boost_addr if site.ainsn.slot is not None else 0,
                              reg, emulate, rp, counts, arg)
        if not optimized and self._wants_hook(site):
            hit.promote_at = PROMOTE_AFTER       # a hook when it proves hot (_hot)
        return hit

    # --- the adaptive optimizer ---------------------------------------------------------
    def _can_optimize(self, site: _Site) -> bool:
        """At most max_optimized sites have code hooks (a handler-less one has none
        and takes no place); past that a site waits as int3 until it is hot."""
        return (self._wants_hook(site)
                and (site.mode == "optimized" or len(self.hooked) < self.max_optimized
                     or not self._needs_hook(site)))

    @staticmethod
    def _needs_hook(site: _Site) -> bool:
        return any(kp.pre_handler is not None for kp in site.active)

    def _promote(self) -> None:
        """A place came free: it goes to the next site that proves hot (_hot),
        not to whichever waits first."""

    def _recent(self, site: _Site) -> int:
        h = site.handler
        return int(h.hits - h.base) if isinstance(h, self.native.Hit) else 0

    def _hot(self, site: _Site) -> None:
        """An int3 site that wants a hook was hit PROMOTE_AFTER times: hook it, in
        place of the coldest hooked site if every place is taken and that one was
        hit less since the last look (the kernel's optimizer works the same way
        in the background: a probe is int3 first and optimized later). Called
        at the end of the site's int3 hit: the engine is between blocks."""
        if site.mode != "int3" or not self._wants_hook(site) or site.gone:
            return
        if len(self.hooked) >= self.max_optimized:
            coldest = min(self.hooked, key=self._recent, default=None)
            if coldest is None or self._recent(coldest) >= self._recent(site):
                h = site.handler
                if isinstance(h, self.native.Hit):
                    h.promote_at = h.hits + PROMOTE_AFTER * 16        # back off
                return
            self._serve(coldest, "int3")
        self._serve(site, "optimized")

    def _tidy(self) -> None:
        """TIDY_EVERY hooked hits: look for idle hooks at the next safe point. (Not
        now: this is a code hook, inside a translated block that may hold the
        hooked instructions after it; unhooking one of them there would lose its
        hit in this pass, as the block has neither the hook any more nor the int3.)"""
        self._tidy_due = True

    def _safe_point(self, *_: object) -> None:
        """The guest is stopped (a call starts, the scheduler switches tasks)."""
        if self._tidy_due:
            self._tidy_due = False
            self._untie_idle_hooks()

    def _untie_idle_hooks(self) -> None:
        """A hooked site not hit since the last look goes back to int3 (an idle
        hook is a cost to every hooked hit: Unicorn walks all of them); the
        others start counting anew."""
        for site in list(self.hooked):
            h = site.handler
            if not isinstance(h, self.native.Hit):
                continue
            if h.hits == h.base:
                self._serve(site, "int3")
            else:
                h.base = h.hits

    @staticmethod
    def _step_of(ainsn: ArchInsn, optimized: bool) -> tuple[int, int, int, Any]:
        """How the C path steps the probed instruction: (kind, register, operand,
        emulate op): a push or pop's register, a jmp or call's target, the bytes a
        ret pops past the return address."""
        if optimized:
            return _STEP_NONE, 0, 0, None
        op = ainsn.emulate
        if op is None:
            return _STEP_BOOST, 0, 0, None
        shape = shape_of(op)
        if shape == "nop":
            return _STEP_NOP, 0, 0, op
        if isinstance(shape, tuple):
            name, operand = shape
            if name in ("push", "pop"):
                return _STEP_OF[name], operand, 0, op
            return _STEP_OF[name], 0, operand, op
        return _STEP_PY, 0, 0, op


# probes/_native.c's step kinds
_STEP_NONE, _STEP_NOP, _STEP_PUSH, _STEP_BOOST, _STEP_PY, _STEP_POP, _STEP_JMP, _STEP_CALL, _STEP_RET = \
    range(9)
_STEP_OF = {"push": _STEP_PUSH, "pop": _STEP_POP, "jmp": _STEP_JMP, "call": _STEP_CALL, "ret": _STEP_RET}
