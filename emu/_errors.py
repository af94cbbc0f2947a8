"""The one error hierarchy of :mod:`emu`."""

from __future__ import annotations

__all__ = ["EmuError", "GuestFault", "AsmError", "SymbolNotFound", "LoadError"]


class EmuError(Exception):
    """Base class of every error the emulator raises."""


class AsmError(EmuError):
    """The assembly source could not be assembled."""


class LoadError(EmuError):
    """A guest program could not be loaded (bad, truncated or unsupported file)."""


class SymbolNotFound(EmuError, LookupError):
    """A symbol name that the machine does not know."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown symbol {name!r}")
        self.name = name


class GuestFault(EmuError):
    """The guest stopped abnormally: bad memory access, bad instruction, runaway.

    Attributes:
        rip: the guest instruction pointer when the fault happened.
        reason: a short machine-readable kind: ``"unmapped"``, ``"protection"``,
            ``"invalid-instruction"``, ``"trap"``, ``"insn-budget"``, ``"timeout"``,
            ``"exception"``.
    """

    def __init__(self, message: str, *, rip: int, reason: str) -> None:
        super().__init__(message)
        self.rip = rip
        self.reason = reason
