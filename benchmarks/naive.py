"""The baseline a user would write in an afternoon: a kretprobe on the stock
Unicorn binding (``hook_add`` on the entry and on a trampoline, ``reg_read`` /
``mem_read`` / ``mem_write``, a Python list as the instance stack)."""

from __future__ import annotations

import struct
from collections.abc import Callable

from unicorn import UC_HOOK_CODE, Uc
from unicorn.x86_const import UC_X86_REG_RIP, UC_X86_REG_RSP

_Q = struct.Struct("<Q")


class NaiveKretprobe:
    """Calls ``handler(uc)`` each time ``func`` returns.

    ``trampoline`` is the address of any executable byte the guest never runs
    otherwise: the hijacked return lands there and the hook jumps back.
    """

    def __init__(self, uc: Uc, func: int, trampoline: int,
                 handler: Callable[[Uc], None]) -> None:
        self.trampoline = trampoline
        self.handler = handler
        self.returns: list[int] = []
        uc.hook_add(UC_HOOK_CODE, self._entry, None, func, func)
        uc.hook_add(UC_HOOK_CODE, self._return, None, trampoline, trampoline)

    def _entry(self, uc: Uc, address: int, size: int, user_data: object) -> None:
        sp = uc.reg_read(UC_X86_REG_RSP)
        self.returns.append(_Q.unpack(uc.mem_read(sp, 8))[0])
        uc.mem_write(sp, _Q.pack(self.trampoline))

    def _return(self, uc: Uc, address: int, size: int, user_data: object) -> None:
        ret = self.returns.pop()
        self.handler(uc)
        uc.reg_write(UC_X86_REG_RIP, ret)
