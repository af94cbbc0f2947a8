"""Probes on shared objects that are not mapped yet (uprobes' ``PATH:SYMBOL``).

A kprobe or kretprobe whose ``symbol_name`` is ``OBJECT:SYMBOL``
(``libc.so.6:malloc``) while no object of that name is mapped is *pending*
(``OBJECT`` is any of the object's names: base name, path, soname, or short
name ``libc`` as bpftrace takes it, see ``MappedObject.names``):
registration succeeds, nothing is planted, and the probe registers itself for
real when the guest maps the object (``Machine.on_object_mapped``, called once
the object's symbols are in ``m.symbols``). This is how uprobes treat a file
path (``kernel/events/uprobes.c``: the probe belongs to the inode, each new
mapping gets the breakpoint); a kprobe on a module symbol before the module
loads fails with ENOENT instead.

Invariants: a pending probe is not registered (``kp.registered`` is False
until it arms); unregistering it just forgets it; an error while arming (the
object has no such symbol: ``ENOENT``, "probe on libc:mallocx never armed: no
symbol 'mallocx' in libc.so.6") stops the guest and the running ``m.run``
raises it. :func:`pending_probes` says why each probe still waits, for a front
end to report the ones that never armed when the run ends.
A probe object is registered on one machine at a time, pending or not:
``kp._pending_on`` names the machine it waits on, and registering it anywhere
meanwhile (or making a registered probe pending) is refused with ``EINVAL`` at
once, not when the object appears in the middle of a run.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from emu import Machine, MappedObject
from emu._symbols import split_object

from ._errors import ProbeError
from ._kprobe import Kprobe

__all__ = ["defer_if_pending", "forget_pending", "is_pending", "pending_probes", "probe_target"]

_EXT_KEY = "probes.pending"

Register = Callable[[Machine, Any], None]


class _PendingProbes:
    """The pending probes of one machine, keyed by the object they wait for."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        # (object, its kprobe, the probe (kp or its kretprobe), register)
        self.waiting: list[tuple[str, Kprobe, Any, Register]] = []
        m.on_object_mapped.append(self._on_mapped)

    def _on_mapped(self, obj: MappedObject) -> None:
        ready = [w for w in self.waiting if obj.matches(w[0])]
        self.waiting = [w for w in self.waiting if w not in ready]
        for _name, kp, probe, register in ready:
            kp._pending_on = None
            if self.m.symbols.get_symbol(kp.symbol_name or "") is None:
                symbol = split_object(kp.symbol_name or "")[1]
                raise ProbeError(errno.ENOENT, f"probe on {kp.symbol_name} never armed: "
                                               f"no symbol {symbol!r} in {obj.name}")
            register(self.m, probe)


def _pending(m: Machine, create: bool) -> _PendingProbes | None:
    pending = m.extensions.get(_EXT_KEY)
    if pending is None and create:
        pending = m.extensions[_EXT_KEY] = _PendingProbes(m)
    return pending


def _waits_for(m: Machine, kp: Kprobe) -> str | None:
    """The object ``kp`` must wait for, or None when it can be registered now."""
    name = kp.symbol_name
    if name is None or ":" not in name or m.symbols.get_symbol(name) is not None:
        return None
    obj = split_object(name)[0]
    return obj if obj and m.objects.find(obj) is None else None


def defer_if_pending(m: Machine, kp: Kprobe, probe: Any, register: Register) -> bool:
    """Make ``probe`` (``kp`` or the kretprobe owning it) pending if its object is
    not mapped yet; True if so. ``register(m, probe)`` arms it later."""
    if kp._pending_on is not None:
        where = "this machine" if kp._pending_on is m else "another machine"
        raise ProbeError(errno.EINVAL, f"{probe!r} is already registered (pending on {where})")
    obj = _waits_for(m, kp)
    if obj is None:
        return False
    if kp._mgr is not None:
        raise ProbeError(errno.EINVAL, f"{probe!r} is already registered")
    pending = _pending(m, create=True)
    assert pending is not None
    pending.waiting.append((obj, kp, probe, register))
    kp._pending_on = m
    return True


def is_pending(m: Machine, probe: Any) -> bool:
    """True while ``probe`` waits for its object to be mapped."""
    pending = _pending(m, create=False)
    return pending is not None and any(w[2] is probe for w in pending.waiting)


def forget_pending(m: Machine, probe: Any) -> bool:
    """Drop ``probe`` if it is pending; True if it was."""
    pending = _pending(m, create=False)
    if pending is None:
        return False
    gone = [w for w in pending.waiting if w[2] is probe]
    pending.waiting = [w for w in pending.waiting if w[2] is not probe]
    for w in gone:
        w[1]._pending_on = None
    return bool(gone)


def pending_probes(m: Machine) -> list[tuple[Any, str]]:
    """The probes still waiting on ``m``, in registration order, each with why:
    ``"no mapped object matches 'libcc'; mapped: prog, ld-linux-x86-64.so.2, libc.so.6"``.
    A probe whose copy armed in another process of the run (it followed a fork
    or an exec there, ``probes._follow``) is not waiting any more."""
    pending = _pending(m, create=False)
    if pending is None:
        return []
    mapped = ", ".join(obj.name for obj in m.objects) or "nothing"
    return [(probe, f"no mapped object matches {obj!r}; mapped: {mapped}")
            for obj, _kp, probe, _register in pending.waiting
            if not getattr(probe, "_armed_in_copy", False)]


def probe_target(probe: Any) -> str:
    """What ``probe`` (a kprobe or a kretprobe) names: ``libc:malloc``, ``fib+0x4``, an address."""
    kp = getattr(probe, "kp", probe)
    if kp.symbol_name is not None:
        return f"{kp.symbol_name}+{kp.offset:#x}" if kp.offset else str(kp.symbol_name)
    return f"{(kp.addr or 0) + kp.offset:#x}"
