"""The native core (``emu._native``, a small C extension built by ``pip install``
with the system compiler; issue 12).

The pure-Python path is the reference: it is used when the extension could not
be built, and forced with ``KPE_NATIVE=0`` in the environment (read once, at
import). ``make test`` runs the probe suites on both paths.

Attributes:
    AVAILABLE: the extension is loaded and enabled.
    ADDRESSES: name -> address of its hook callbacks (see emu/_native.c), empty
        when not available.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

__all__ = ["AVAILABLE", "ADDRESSES", "WHY_NOT", "Cell", "Dispatch", "CodeHook", "function_address"]


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get("KPE_NATIVE", "1").strip() == "0":
        return None, "disabled by KPE_NATIVE=0"
    try:
        return importlib.import_module("emu._native"), ""
    except ImportError as exc:           # not built: no compiler or no Python headers
        return None, f"not built ({exc})"


_module, WHY_NOT = _load()
AVAILABLE = _module is not None
ADDRESSES: dict[str, int] = dict(_module.addresses()) if _module is not None else {}


def function_address(name: str) -> int:
    """The address of a function of the loaded Unicorn library (``uc_reg_read``):
    the native core calls Unicorn through these, without its headers."""
    import ctypes

    from ._uclib import uclib

    return int(ctypes.cast(getattr(uclib, name), ctypes.c_void_p).value or 0)


# The user data of the native interrupt dispatcher (emu/_native.c), or None.
Dispatch: Any = getattr(_module, "Dispatch", None)
# The user data of the native raw code hook (emu/_native.c code_dispatch), or None.
CodeHook: Any = getattr(_module, "CodeHook", None)


class _PyCell:
    """An int the native core shares (the Python stand-in of emu._native.Cell)."""

    __slots__ = ("value",)

    def __init__(self, value: int = 0) -> None:
        self.value = value


# An int64 shared with native code (emu/_native.c Cell), or its Python stand-in.
Cell: Any = getattr(_module, "Cell", _PyCell)
