"""The stack unwinder: ``.eh_frame`` CFI first, frame pointers where there is none.

Each step finds the caller's ``rip`` (the return address), ``rsp`` and ``rbp``
from the current frame's:

- **CFI** (:mod:`emu._cfi`): when the object holding the pc has an FDE row
  for it. Exact at every instruction, with or without frame pointers. For a
  caller's frame the row is looked up at ``pc - 1`` (inside the call; the
  return address of a call to a ``noreturn`` function may be past the FDE).
- **frame pointers** otherwise (assembled code, JIT code, rules the CFI
  reader does not follow): ``[rbp]`` is the caller's rbp and ``[rbp + 8]`` the
  return address (System V AMD64 with ``push rbp; mov rbp, rsp``). At a
  function's first instruction (before ``push rbp``) or its second (before
  ``mov rbp, rsp``) rbp still belongs to the caller, so the return address is
  read from the stack pointer, as the kernel's unwinder does for a probe at
  function entry; but only when the caller says so (``at_entry``): a return
  site may carry a label too (``call f`` then ``caller_ret:``), and there the
  word at ``rsp`` is the caller's data, not a return address.

A kretprobe's trampoline in a return address slot hides the real return
address; ``recover_ret_addr(addr, slot)`` gives it back (the kernel's
``unwind_recover_ret_addr``), so the walk continues in the real caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from ._cfi import DWARF_RSP, cfa_row
from ._memory import PAGE, PROT_X

if TYPE_CHECKING:
    from ._machine import Machine

__all__ = ["unwind", "follows_call"]

_PUSH_RBP = b"\x55"
_MAX_FRAMES = 256
_MASK64 = (1 << 64) - 1

# The call instructions whose end marks a return site: (length, mask, value)
# of their first bytes (Intel SDM vol. 2, CALL: E8, or FF with ModRM.reg 2).
_CALL_FORMS = (
    (5, b"\xff", b"\xe8"),              # call rel32
    (6, b"\xff\xff", b"\xff\x15"),      # call [rip + disp32]
    (2, b"\xff\xf8", b"\xff\xd0"),      # call r64 (with REX.B: 41 ff d0+r)
    (2, b"\xff\xf8", b"\xff\x10"),      # call [r64]
    (3, b"\xff\xf8", b"\xff\x50"),      # call [r64 + disp8]
    (6, b"\xff\xf8", b"\xff\x90"),      # call [r64 + disp32]
    (3, b"\xff\xff", b"\xff\x14"),      # call [base + index*scale] (SIB)
    (4, b"\xff\xff", b"\xff\x54"),      # call [SIB + disp8]
    (7, b"\xff\xff", b"\xff\x94"),      # call [SIB + disp32]
)


class _Frame(NamedTuple):
    """The caller's state: where it resumes, the slot that said so, its rsp and rbp."""

    ret: int
    slot: int
    rsp: int
    rbp: int


RecoverRetAddr = Callable[[int, int], int]


def unwind(m: Machine, rip: int, rsp: int, rbp: int, *, at_entry: bool = False,
           recover_ret_addr: RecoverRetAddr | None = None) -> Iterator[tuple[int, int | None]]:
    """Yield ``(address, slot)`` innermost first: ``(rip, None)``, then each return
    address with the stack address it was read from.

    Args:
        at_entry: the registers are those of a probe hit at a function's entry
            (a kprobe's pre_handler on its first or second instruction): where
            no CFI covers ``rip``, the return address is then at ``rsp``.
        recover_ret_addr: ``fn(addr, slot)`` gives the real return address for
            one a tracer put there (a kretprobe trampoline), else ``addr``.

    Stops at the outermost frame of :meth:`Machine.call` (the exit page), at an
    undefined return address (``_start``'s CFI), at unmapped memory, at a stack
    that does not grow towards the caller, and after 256 frames.
    """
    yield rip, None
    exit_page = m.exit_address & ~(PAGE - 1)
    pc, innermost = rip, True
    for _ in range(_MAX_FRAMES):
        frame = _step(m, pc, rsp, rbp, innermost, at_entry and innermost)
        if frame is None or frame.rsp <= rsp:
            return
        ret = frame.ret
        if recover_ret_addr is not None:
            ret = recover_ret_addr(ret, frame.slot)
        if ret & ~(PAGE - 1) == exit_page or m.mem.region_at(ret) is None:
            return
        yield ret, frame.slot
        pc, rsp, rbp, innermost = ret, frame.rsp, frame.rbp, False


def _step(m: Machine, pc: int, rsp: int, rbp: int, innermost: bool, at_entry: bool) -> _Frame | None:
    # The innermost pc is the instruction about to run (also in a return
    # handler: the call is done); a caller's pc is the instruction after its call.
    row = cfa_row(m, pc if innermost else pc - 1)
    if row is None:
        return _step_fp(m, pc, rsp, rbp, at_entry)
    cfa = ((rsp if row.cfa_reg == DWARF_RSP else rbp) + row.cfa_offset) & _MASK64
    if row.ra_offset is None:           # undefined: the outermost frame
        return None
    slot = cfa + row.ra_offset
    ret = _word(m, slot)
    caller_rbp = rbp if row.rbp_offset is None else _word(m, cfa + row.rbp_offset)
    if ret is None or caller_rbp is None:
        return None
    return _Frame(ret, slot, cfa, caller_rbp)


def _step_fp(m: Machine, pc: int, rsp: int, rbp: int, at_entry: bool) -> _Frame | None:
    if at_entry:
        frame = _step_at_entry(m, pc, rsp, rbp)
        if frame is not None:
            return frame
    if not rbp or rbp % 8 or rbp < rsp:
        return None
    ret, caller_rbp = _word(m, rbp + 8), _word(m, rbp)
    if ret is None or caller_rbp is None:
        return None
    return _Frame(ret, rbp + 8, rbp + 16, caller_rbp)


def _step_at_entry(m: Machine, pc: int, rsp: int, rbp: int) -> _Frame | None:
    """Before ``mov rbp, rsp``: the return address is at rsp (or rsp + 8 after
    ``push rbp``) and rbp is still the caller's. ``None`` when ``pc`` is not a
    symbol's first or second instruction, or the word there is not code."""
    sym = m.symbols.lookup(pc)
    if sym is None or pc not in (sym.addr, sym.addr + 1):
        return None
    if pc == sym.addr + 1 and m.read(sym.addr, 1) != _PUSH_RBP:
        return None
    slot = rsp + 8 * (pc - sym.addr)
    ret = _word(m, slot)
    if ret is None or not _is_code(m, ret):
        return None
    return _Frame(ret, slot, slot + 8, rbp)


def follows_call(m: Machine, addr: int) -> bool:
    """Does a call instruction end at ``addr``, making it a return site?

    A heuristic on the bytes before ``addr`` (x86 cannot be decoded backwards
    for sure); its use is to tell a labelled return site from a function entry
    in code without CFI.
    """
    for length, mask, value in _CALL_FORMS:
        start = addr - length
        if m.mem.region_at(start) is None or m.mem.region_at(addr - 1) is None:
            continue
        head = m.read(start, len(value))
        if bytes(b & k for b, k in zip(head, mask, strict=True)) == value:
            return True
    return False


def _is_code(m: Machine, addr: int) -> bool:
    region = m.mem.region_at(addr)
    return region is not None and bool(region.perms & PROT_X)


def _word(m: Machine, addr: int) -> int | None:
    if m.mem.region_at(addr) is None or m.mem.region_at(addr + 7) is None:
        return None
    return m.mem.read_u64(addr)
