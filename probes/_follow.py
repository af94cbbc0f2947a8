"""Probes follow processes, as uprobes do (kernel/events/uprobes.c).

A uprobe belongs to a file, not to a process: every process that maps the
file gets the breakpoint, a forked child keeps its parent's
(``uprobe_dup_mmap``), and a program started by ``execve`` gets it when it maps
the file. Here a probe is registered on one machine (one address space), so a
follower registers a *copy* of each probe (same target, same handlers, same
flags) on each new machine of the run:

- after ``fork`` (``Machine.on_fork``): every probe of the parent's machine,
  armed or pending, on the child's (a copy of the same address space, so the
  same addresses);
- after ``execve`` (``Machine.on_exec``): the probes whose target the new
  program may map: ``OBJECT:SYMBOL`` ones (pending until that object is mapped),
  and those on the old program's own symbols when the new program is the same
  file. Probes by address only stay with the address space they were set in.

The copy's handlers see the machine that hit through ``regs.machine`` (and
``regs.machine.current_task``: its ``pid`` and ``tid``); its counters
(``nmissed``, ``nunwound``) are its own, and ``probe_copies(probe)`` lists them.

A fork in the middle of probed calls: the child's copy of the stack holds the
parent's kretprobe trampoline as return addresses of the forking thread's
probed frames; the follower puts the real return addresses back, so those
calls return normally in the child without their return handler (uprobes
copies the return instances instead: ``dup_utask``).
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from emu import Machine
from emu._objects import EXE
from emu._symbols import split_object

from ._kprobe import KPROBE_FLAG_DISABLED, Kprobe
from ._kretprobe import Kretprobe

__all__ = ["follow_processes", "probe_copies"]

_EXT_KEY = "probes.follow"


def follow_processes(m: Machine) -> None:
    """Make the probes of ``m`` (and of every machine of its run) follow forks
    and execs. Idempotent; called when a machine gets its first probe."""
    if _on_fork not in m.on_fork:
        m.on_fork.append(_on_fork)
    if _on_exec not in m.on_exec:
        m.on_exec.append(_on_exec)


def probe_copies(probe: Kprobe | Kretprobe) -> list[Kprobe | Kretprobe]:
    """The copies of ``probe`` registered in other processes (forks, execs) whose
    machines still exist (an ended process's go with its machine)."""
    return list(getattr(probe, "_copies", ()))


def _probes_of(m: Machine) -> list[Kprobe | Kretprobe]:
    """The top-level probes of ``m``: armed ones by address, then pending ones."""
    from ._core import _EXT_KEY as _MGR_KEY
    from ._pending import _pending
    out: list[Kprobe | Kretprobe] = []
    mgr = m.extensions.get(_MGR_KEY)
    if mgr is not None:
        for addr in sorted(mgr.sites):
            for kp in mgr.sites[addr].probes:
                out.append(kp._kretprobe if kp._kretprobe is not None else kp)
    pending = _pending(m, create=False)
    if pending is not None:
        out.extend(w[2] for w in pending.waiting)
    return list(dict.fromkeys(out))


def _copy(probe: Kprobe | Kretprobe) -> Kprobe | Kretprobe:
    origin = getattr(probe, "_origin", probe)
    if isinstance(probe, Kretprobe):
        kp = probe.kp
        copy: Kprobe | Kretprobe = Kretprobe(
            symbol_name=kp.symbol_name, addr=None if kp.symbol_name else kp.addr,
            handler=probe.handler, entry_handler=probe.entry_handler, data_size=probe.data_size,
            maxactive=probe.maxactive)
    else:
        copy = Kprobe(symbol_name=probe.symbol_name, addr=None if probe.symbol_name else probe.addr,
                      offset=probe.offset, pre_handler=probe.pre_handler,
                      post_handler=probe.post_handler, flags=probe.flags & KPROBE_FLAG_DISABLED)
    copy._origin = origin                   # type: ignore[union-attr]
    if not hasattr(origin, "_copies"):
        # Weak: an ended process's machine, its probes and their copies go together.
        origin._copies = weakref.WeakSet()  # type: ignore[union-attr]
    origin._copies.add(copy)                # type: ignore[union-attr]
    return copy


def _register(m: Machine, probe: Kprobe | Kretprobe) -> None:
    from ._api import register_kprobe, register_kretprobe
    if isinstance(probe, Kretprobe):
        register_kretprobe(m, probe)
    else:
        register_kprobe(m, probe)


def _on_fork(parent: Machine, child: Machine) -> None:
    probes = _probes_of(parent)
    _restore_return_addresses(parent, child)
    for probe in probes:
        _register(child, _copy(probe))


def _restore_return_addresses(parent: Machine, child: Machine) -> None:
    from ._core import _EXT_KEY as _MGR_KEY
    mgr = parent.extensions.get(_MGR_KEY)
    if mgr is None:
        return
    for ri in mgr.rethook.inflight.get(parent.current_task, []):
        if not ri.shared and child.mem.region_at(ri.fp) is not None:
            child.mem.write_u64(ri.fp, ri.ret_addr)


def _on_exec(old: Machine, new: Machine) -> None:
    old_exe = next((o for o in old.objects if o.kind == EXE), None)
    new_exe = next((o for o in new.objects if o.kind == EXE), None)
    same_program = old_exe is not None and new_exe is not None and \
        os.path.realpath(old_exe.path) == os.path.realpath(new_exe.path)
    for probe in _probes_of(old):
        kp = probe.kp if isinstance(probe, Kretprobe) else probe
        name = kp.symbol_name
        if name is None:
            continue                        # an address belongs to the old image
        obj, _symbol = split_object(name)
        if obj is None and not same_program:
            continue                        # the old program's own symbol
        _register(new, _copy(probe))


def machine_of(regs: Any, default: Machine) -> Machine:
    """The machine whose probe hit (``regs.machine``), else ``default``."""
    m = getattr(regs, "machine", None)
    return m if m is not None else default
