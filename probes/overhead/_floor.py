"""The raw ctypes floor: the least a probe at an address can cost in this emulator.

The floor is a no-op ``UC_HOOK_CODE`` callback on the probed address, installed
through raw ctypes (``Machine.hook_code(addr, fn, raw=True)``: Unicorn calls
``fn(uch, addr, size, key)`` through a ``HOOK_CODE_CFUNC`` pointer, see
``emu._uclib.RawHooks``), with no ``Uc`` object, no user-data translation and no
Python frame of its own. Every probe's hit pays at least this: the engine
leaving translated code for one Python call and coming back. Per-hit costs
are reported as multiples of it, measured on the same workload in the same
run, so the ratio holds on any host.

Used by :func:`probes.overhead.measure`; kept on its own so that the project's
benchmarks can measure the same floor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from emu import Machine

from ._points import ProbePoint

__all__ = ["install_floor", "count_executions", "hook_points", "floor_callback"]

RawCallback = Callable[[Any, int, int, Any], None]


def floor_callback(_uch: Any, _addr: int, _size: int, _key: Any) -> None:
    """The no-op raw code hook: nothing but the call itself."""
    return None


def hook_points(m: Machine, points: Iterable[ProbePoint], fn: RawCallback) -> None:
    """A raw code hook ``fn`` at each point's address: now, or when the object of
    an ``OBJECT:SYM`` point is mapped (as a pending probe arms)."""
    for point in points:
        addr = point.resolve(m)
        if addr is not None:
            m.hook_code(addr, fn, raw=True)
            continue
        _hook_when_mapped(m, point, fn)


def _hook_when_mapped(m: Machine, point: ProbePoint, fn: RawCallback) -> None:
    def on_mapped(_obj: object) -> None:
        addr = point.resolve(m)
        if addr is not None and on_mapped in m.on_object_mapped:
            m.on_object_mapped.remove(on_mapped)
            m.hook_code(addr, fn, raw=True)
    m.on_object_mapped.append(on_mapped)


def install_floor(m: Machine, points: Iterable[ProbePoint]) -> None:
    """The floor on ``m``: a no-op raw code hook at each of ``points``."""
    hook_points(m, points, floor_callback)


def count_executions(m: Machine, points: Iterable[ProbePoint]) -> list[int]:
    """Count the executions of the points' addresses: the returned one-item list
    holds the total (a counting run, not a timed one)."""
    count = [0]

    def counted(_uch: Any, _addr: int, _size: int, _key: Any) -> None:
        count[0] += 1
    hook_points(m, points, counted)
    return count
