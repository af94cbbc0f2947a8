"""The registration API, in the kernel's names (include/linux/kprobes.h).

``register_kprobe`` reads as the kernel's checklist: resolve the address
(``_kprobe_addr``), refuse a re-registration, check the address is safe, join
an aggregate or prepare the instruction, arm. ``register_kretprobe`` adds
``kprobe_on_func_entry``, the data-size bound and the instance pool.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from typing import Any

from emu import Machine

from ._core import get_manager
from ._errors import ProbeError
from ._exclusive import exclusive
from ._follow import follow_processes
from ._kprobe import Kprobe
from ._kretprobe import KRETPROBE_MAX_DATA_SIZE, KRETPROBE_MAXACTIVE_LIMIT, Kretprobe
from ._pending import defer_if_pending, forget_pending

__all__ = [
    "register_kprobe", "unregister_kprobe", "register_kprobes", "unregister_kprobes",
    "register_kretprobe", "unregister_kretprobe", "register_kretprobes",
    "unregister_kretprobes",
]

_DEFAULT_MAXACTIVE = 10       # max(10, 2 * num_possible_cpus()) with one CPU
_ENDBR64 = bytes.fromhex("f30f1efa")


@exclusive
def register_kprobe(m: Machine, kp: Kprobe) -> None:
    """Plant ``kp``. Raises :class:`ProbeError` with the kernel's errno."""
    if not isinstance(kp, Kprobe):
        raise TypeError(f"register_kprobe() needs a Kprobe, got {type(kp).__name__}")
    follow_processes(m)                     # pending or armed, it follows forks and execs
    if defer_if_pending(m, kp, kp, register_kprobe):      # "libc.so.6:malloc" before libc
        return
    get_manager(m).register(kp)
    origin = getattr(kp._kretprobe or kp, "_origin", None)
    if origin is not None:                  # a copy in another process armed (probes._follow)
        origin._armed_in_copy = True


@exclusive
def unregister_kprobe(m: Machine, kp: Kprobe) -> None:
    """Remove ``kp``; a probe that is not registered on ``m`` is ignored (as in the kernel)."""
    if forget_pending(m, kp):
        return
    get_manager(m).unregister(kp)


def register_kprobes(m: Machine, kps: Iterable[Kprobe]) -> None:
    """Register all or none: on an error the ones already done are unregistered."""
    _register_all(m, list(kps), register_kprobe, unregister_kprobe)


def unregister_kprobes(m: Machine, kps: Iterable[Kprobe]) -> None:
    for kp in kps:
        unregister_kprobe(m, kp)


def _check_func_entry(m: Machine, rp: Kretprobe) -> None:
    """``kprobe_on_func_entry()``: the address must be a function's first instruction
    (or the one after its ``endbr64``, as x86 allows with IBT)."""
    mgr = get_manager(m)
    addr = mgr.resolve(rp.kp)
    sym = m.symbols.lookup(addr)
    if sym is None:
        raise ProbeError(errno.EINVAL, f"kretprobe at {addr:#x}: not the entry of a known function")
    if addr in m.entry_points or (addr == sym.addr + 4 and sym.addr in m.entry_points):
        # [rsp] there is argc, not a return address: hijacking it would change what the
        # program computes (make fuzz found `r _start`).
        raise ProbeError(errno.EINVAL, f"kretprobe at {m.symbolize(addr)}: the program's entry "
                                       "point is jumped to, never called: it has no return address")
    if addr == sym.addr or (addr == sym.addr + 4 and m.read(sym.addr, 4) == _ENDBR64):
        return
    raise ProbeError(errno.EINVAL,
                     f"kretprobe at {m.symbolize(addr)}: not at the entry of {sym.name}")


@exclusive
def register_kretprobe(m: Machine, rp: Kretprobe) -> None:
    """Probe the returns of a function. Raises :class:`ProbeError`."""
    if not isinstance(rp, Kretprobe):
        raise TypeError(f"register_kretprobe() needs a Kretprobe, got {type(rp).__name__}")
    if rp.kp._mgr is not None:
        raise ProbeError(errno.EINVAL, f"{rp!r} is already registered")
    follow_processes(m)
    if defer_if_pending(m, rp.kp, rp, register_kretprobe):
        return
    _check_func_entry(m, rp)
    if rp.data_size > KRETPROBE_MAX_DATA_SIZE:
        raise ProbeError(errno.E2BIG, f"data_size {rp.data_size} is over {KRETPROBE_MAX_DATA_SIZE}")
    if rp.data_size < 0:
        raise ProbeError(errno.EINVAL, f"data_size {rp.data_size} is negative")
    if rp.maxactive > KRETPROBE_MAXACTIVE_LIMIT:
        raise ProbeError(errno.E2BIG, f"maxactive {rp.maxactive} is over {KRETPROBE_MAXACTIVE_LIMIT}")
    if rp.maxactive <= 0:
        rp.maxactive = _DEFAULT_MAXACTIVE
    rp.nmissed = 0
    rp.nunwound = 0
    try:                    # the pool first: a failed allocation leaves nothing registered
        rp._alloc_pool()
    except MemoryError:
        rp._drop_pool()
        raise ProbeError(errno.ENOMEM, f"no memory for {rp.maxactive} instances of "
                                       f"{rp.data_size} bytes") from None
    rp._mgr = get_manager(m)
    try:
        register_kprobe(m, rp.kp)
    except BaseException:
        rp._mgr = None
        rp._drop_pool()
        raise


@exclusive
def unregister_kretprobe(m: Machine, rp: Kretprobe) -> None:
    """Remove ``rp``. Calls in flight still return to the right place; no handler
    runs for them after this (the kernel's rethook clears the handler)."""
    if forget_pending(m, rp):
        return
    if rp.kp._mgr is not get_manager(m):
        return
    unregister_kprobe(m, rp.kp)
    rp._gen += 1            # in-flight instances are no longer this probe's
    rp._drop_pool()


def register_kretprobes(m: Machine, rps: Iterable[Kretprobe]) -> None:
    _register_all(m, list(rps), register_kretprobe, unregister_kretprobe)


def unregister_kretprobes(m: Machine, rps: Iterable[Kretprobe]) -> None:
    for rp in rps:
        unregister_kretprobe(m, rp)


def _register_all(m: Machine, items: list[Any], register: Callable[[Machine, Any], None],
                  unregister: Callable[[Machine, Any], None]) -> None:
    done = []
    try:
        for item in items:
            register(m, item)
            done.append(item)
    except BaseException:
        for item in reversed(done):
            unregister(m, item)
        raise
