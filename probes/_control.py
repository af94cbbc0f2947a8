"""Switches over registered probes: enable/disable, the global arm switch, the
blacklist and the optimization sysctl (kernel/kprobes.c)."""

from __future__ import annotations

import errno

from emu import Machine

from ._core import get_manager
from ._errors import ProbeError
from ._exclusive import exclusive
from ._kprobe import KPROBE_FLAG_DISABLED, KPROBE_FLAG_GONE, Kprobe
from ._kretprobe import Kretprobe

__all__ = ["enable_kprobe", "disable_kprobe", "enable_kretprobe", "disable_kretprobe",
           "arm_all", "disarm_all", "add_blacklist", "set_optimization"]


def _registered(m: Machine, kp: Kprobe) -> None:
    if kp._mgr is None or kp._mgr is not get_manager(m):
        raise ProbeError(errno.EINVAL, f"{kp!r} is not registered on this machine")


@exclusive
def enable_kprobe(m: Machine, kp: Kprobe) -> None:
    """Re-arm a disabled probe (``enable_kprobe()``). EINVAL if not registered, or
    if its code was unmapped (``KPROBE_FLAG_GONE``: nothing left to arm)."""
    _registered(m, kp)
    if kp.flags & KPROBE_FLAG_GONE:
        raise ProbeError(errno.EINVAL, f"{kp!r} is gone: its code was unmapped")
    kp.flags &= ~KPROBE_FLAG_DISABLED
    mgr = get_manager(m)
    mgr.update(mgr.site_of(kp))


@exclusive
def disable_kprobe(m: Machine, kp: Kprobe) -> None:
    """Stop a probe firing without unregistering it. The int3 goes away only when
    every probe sharing its address is disabled. EINVAL if not registered."""
    _registered(m, kp)
    kp.flags |= KPROBE_FLAG_DISABLED
    mgr = get_manager(m)
    mgr.update(mgr.site_of(kp))


def enable_kretprobe(m: Machine, rp: Kretprobe) -> None:
    enable_kprobe(m, rp.kp)


def disable_kretprobe(m: Machine, rp: Kretprobe) -> None:
    """Calls already in flight still run their return handler, as in the kernel."""
    disable_kprobe(m, rp.kp)


@exclusive
def arm_all(m: Machine) -> None:
    """The debugfs ``enabled`` switch on: arm every probe not individually disabled."""
    mgr = get_manager(m)
    mgr.armed_all = True
    mgr.update_all()


@exclusive
def disarm_all(m: Machine) -> None:
    """The debugfs ``enabled`` switch off: per-probe flags are kept; probes
    registered meanwhile stay disarmed until :func:`arm_all`."""
    mgr = get_manager(m)
    mgr.armed_all = False
    mgr.update_all()


@exclusive
def add_blacklist(m: Machine, start: int, end: int) -> None:
    """Refuse probes on ``[start, end)`` with EINVAL (``NOKPROBE_SYMBOL`` analogue).

    Probes already registered there stay; only new registrations are refused.
    """
    if end <= start:
        raise ValueError(f"empty blacklist range {start:#x}-{end:#x}")
    get_manager(m).user_blacklist.append((start, end))


@exclusive
def set_optimization(m: Machine, enabled: bool) -> None:
    """The ``debug.kprobes-optimization`` sysctl: serve probes that have no
    post_handler by a code hook instead of an int3 (no patch, no second trap)."""
    mgr = get_manager(m)
    mgr.optimize = bool(enabled)
    mgr.update_all()
