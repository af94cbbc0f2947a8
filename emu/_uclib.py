"""Direct access to the Unicorn C library, bypassing the stock Python wrappers.

The stock ``Uc.reg_read``/``Uc.hook_add`` wrappers cost microseconds per call;
the hot paths of this project (probe traps) call the C functions through
ctypes prototypes without ``argtypes`` checking, with preallocated arguments.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from unicorn import Uc
from unicorn.unicorn_py3.unicorn import (
    HOOK_CODE_CFUNC,
    HOOK_INTR_CFUNC,
    HOOK_MEM_INVALID_CFUNC,
    uclib,
)

__all__ = ["RawHooks", "fast_lib", "HOOK_CODE_CFUNC", "HOOK_INTR_CFUNC",
           "HOOK_MEM_INVALID_CFUNC"]

# Same shared object, separate function objects without argtypes: calls skip
# per-argument conversion (about 0.28 us instead of 0.42 us for uc_reg_read).
fast_lib = ctypes.CDLL(uclib._name)


class RawHooks:
    """Adds Unicorn hooks whose callbacks are raw ctypes function pointers.

    The callback receives the C arguments directly (no ``Uc`` object, no
    user-data translation), which is what makes a trap cost ~0.15 us.
    The instance keeps each function pointer alive until the hook is deleted.
    """

    def __init__(self, uc: Uc) -> None:
        self._uc = uc
        self._keep: dict[int, Any] = {}
        self._retired: list[Any] = []   # callbacks deleted while maybe still running

    def add(self, htype: int, cfunc_type: Any, fn: Callable[..., Any],
            begin: int = 1, end: int = 0, *extra: Any) -> int:
        cfn = cfunc_type(fn)
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(
            self._uc._uch, ctypes.byref(handle), htype,
            ctypes.cast(cfn, ctypes.c_void_p), None,
            ctypes.c_uint64(begin), ctypes.c_uint64(end), *extra)
        if status != 0:
            raise RuntimeError(f"uc_hook_add failed with Unicorn error {status}")
        self._keep[handle.value] = cfn
        return handle.value

    def delete(self, handle: int) -> None:
        """Delete a hook. Its function pointer is kept until :meth:`release_retired`:
        the hook may be deleting itself from inside its own callback."""
        status = uclib.uc_hook_del(self._uc._uch, ctypes.c_size_t(handle))
        if status != 0:
            raise RuntimeError(f"uc_hook_del failed with Unicorn error {status}")
        cfn = self._keep.pop(handle, None)
        if cfn is not None:
            self._retired.append(cfn)

    def release_retired(self) -> None:
        """Free deleted callbacks; call only while the engine is stopped."""
        self._retired.clear()


# --- the instruction counter of uc_emu_start(count=N) ----------------------------------
# Unicorn counts the instructions of a counted run in ``uc->emu_counter`` and stops
# when it passes ``uc->emu_count`` (two adjacent uint64 fields of ``struct
# uc_struct``, not exported). Reading the first tells how many instructions a
# slice retired; lowering the second to the first from inside a hook stops the
# engine before the next instruction, which is how the scheduler ends a slice
# at a probe hit without disturbing the hit. The offset is found once per process
# on a scratch engine, by running known counts, and only trusted after two checks.
_COUNTER_SCAN = 0x8000
_counter_offset: int | None | bool = False     # False: not looked for yet


def _find_counter_offset() -> int | None:
    import struct

    from unicorn import UC_ARCH_X86, UC_MODE_64

    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0x1000, 0x2000)
    uc.mem_write(0x1000, b"\x90" * 0x1000 + b"\xf4")
    base = uc._uch.value
    candidates: set[int] | None = None
    for n in (37, 91, 5):
        uc.emu_start(0x1000, 0x2000, 0, n)
        blob = ctypes.string_at(base, _COUNTER_SCAN)
        found = {off for off in range(0, _COUNTER_SCAN - 16, 8)
                 if struct.unpack_from("<QQ", blob, off) == (n + 1, n)}
        candidates = found if candidates is None else candidates & found
    if candidates is None or len(candidates) != 1:
        return None
    return candidates.pop()


def counter_cells(uc: Uc) -> tuple[Any, Any] | None:
    """``(emu_counter, emu_count)`` of ``uc`` as live ``c_uint64`` cells, or None
    when this build of Unicorn does not show them where expected."""
    global _counter_offset
    if _counter_offset is False:
        try:
            _counter_offset = _find_counter_offset()
        except Exception:       # a scan that cannot run: no counter, the slow path
            _counter_offset = None
    if _counter_offset is None:
        return None
    base = uc._uch.value + int(_counter_offset)
    return ctypes.c_uint64.from_address(base), ctypes.c_uint64.from_address(base + 8)
