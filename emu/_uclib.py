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

    def add_native(self, htype: int, address: int, user_data: int = 0, begin: int = 1,
                   end: int = 0, keep: Any = None) -> int:
        """Add a hook whose callback is a C function at ``address`` (emu._native):
        Unicorn calls it without entering Python. ``user_data`` is passed as is;
        ``keep`` (the object it points to) lives until the hook is deleted and
        retired, like a ctypes callback."""
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(
            self._uc._uch, ctypes.byref(handle), htype, ctypes.c_void_p(address),
            ctypes.c_void_p(user_data), ctypes.c_uint64(begin), ctypes.c_uint64(end))
        if status != 0:
            raise RuntimeError(f"uc_hook_add failed with Unicorn error {status}")
        if keep is not None:
            self._keep[handle.value] = keep
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

