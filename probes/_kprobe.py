"""``struct kprobe`` and its flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._core import KprobeManager
    from ._regs import PtRegs

__all__ = ["Kprobe", "KPROBE_FLAG_GONE", "KPROBE_FLAG_DISABLED", "KPROBE_FLAG_OPTIMIZED"]

# include/linux/kprobes.h
KPROBE_FLAG_GONE = 1
KPROBE_FLAG_DISABLED = 2
KPROBE_FLAG_OPTIMIZED = 4

PreHandler = Callable[["Kprobe", "PtRegs"], "int | None"]
PostHandler = Callable[["Kprobe", "PtRegs", int], Any]


class Kprobe:
    """A probe on one instruction.

    Args:
        symbol_name: function to probe (with ``offset``), or None when ``addr`` is given.
        addr: absolute address to probe, or None when ``symbol_name`` is given.
        offset: byte offset from ``symbol_name`` (or from ``addr``).
        pre_handler: ``pre_handler(kp, regs) -> int | None``, before the instruction;
            non-zero means "I moved regs.rip": no single-step, no post_handler.
        post_handler: ``post_handler(kp, regs, flags)``, after the instruction.
        flags: ``KPROBE_FLAG_DISABLED`` registers the probe disarmed.

    After registration ``addr`` is the resolved address; ``nmissed`` counts hits
    that ran no handler because another handler was running.
    """

    def __init__(self, symbol_name: str | None = None, addr: int | None = None, offset: int = 0,
                 pre_handler: PreHandler | None = None, post_handler: PostHandler | None = None,
                 flags: int = 0) -> None:
        self._mgr: KprobeManager | None = None
        self.symbol_name = symbol_name
        self.addr = addr
        self.offset = offset
        self.pre_handler = pre_handler
        self.post_handler = post_handler
        self.flags = flags
        self.nmissed = 0
        # Set for the entry probe of a kretprobe (the kernel finds it by pre_handler).
        self._kretprobe: Any = None
        # The machine it waits on while pending (probes._pending), else None.
        self._pending_on: Any = None

    @property
    def pre_handler(self) -> PreHandler | None:
        return self._pre_handler

    @pre_handler.setter
    def pre_handler(self, fn: PreHandler | None) -> None:
        """A registered probe's site is served anew (a handler-less optimized
        site gets its hook, a native site its hit path)."""
        self._pre_handler = fn
        if self._mgr is not None:
            self._mgr.handlers_changed(self)

    @property
    def registered(self) -> bool:
        return self._mgr is not None

    @property
    def disabled(self) -> bool:
        return bool(self.flags & KPROBE_FLAG_DISABLED)

    def __repr__(self) -> str:
        where = self.symbol_name or (f"{self.addr:#x}" if self.addr is not None else "?")
        if self.offset:
            where += f"+{self.offset:#x}"
        state = "registered" if self._mgr else "unregistered"
        return f"<Kprobe {where} {state} nmissed={self.nmissed}>"
