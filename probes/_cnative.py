"""The probe hit paths in C (``probes._native``, built from probes/_native.c by
``pip install``; issue 12).

Used when the native core is available (``emu.native.AVAILABLE``: built, and
not switched off with ``KPE_NATIVE=0``) and the machine reads its registers
from the live block (``m.cpu.is_fast``). The Python hit paths stay the
reference; the C ones hand every uncommon shape to them.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from emu import Machine, native

__all__ = ["NATIVE", "ADDRESSES", "for_machine"]


def _load() -> ModuleType | None:
    if not native.AVAILABLE:
        return None
    try:
        return importlib.import_module("probes._native")
    except ImportError:                 # built without it: the Python paths
        return None


NATIVE: Any = _load()
ADDRESSES: dict[str, int] = dict(NATIVE.addresses()) if NATIVE is not None else {}


def for_machine(m: Machine) -> Any:
    """The native module when the probes of ``m`` can use it, else None."""
    return NATIVE if NATIVE is not None and m.cpu.is_fast else None
