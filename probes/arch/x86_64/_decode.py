"""Instruction decoding with Capstone: boundaries and the refused opcodes.

arch/x86/kernel/kprobes/core.c ``can_probe()``: an address is probe-able only
if decoding from the start of its function lands exactly on it; an ``int3``
already there (another debugger's) or an instruction that raises an exception
by design is refused with ``-EILSEQ``.
"""

from __future__ import annotations

import errno

from capstone import CS_ARCH_X86, CS_MODE_64, Cs, CsInsn
from capstone import x86_const as X

from emu import Machine
from emu._regtable import FAST_INDEX

from ..._errors import ProbeError

__all__ = ["decode", "check_boundary", "fast_index", "MAX_INSN_SIZE"]

MAX_INSN_SIZE = 15
_cs = Cs(CS_ARCH_X86, CS_MODE_64)
_cs.detail = True

# Instructions that trap by design: refused like the kernel's can_probe().
_REFUSED = {
    X.X86_INS_INT3: "int3", X.X86_INS_INT: "int n", X.X86_INS_INTO: "into",
    X.X86_INS_INT1: "int1", X.X86_INS_UD2: "ud2", X.X86_INS_UD1: "ud1",
    X.X86_INS_UD0: "ud0",
}

_REG_FAST: dict[int, int] = {}
for _name, _index in FAST_INDEX.items():
    _id = getattr(X, f"X86_REG_{_name.upper()}", None)
    if _id is not None:
        _REG_FAST[_id] = _index


def fast_index(cs_reg: int) -> int | None:
    """Position of a 64-bit Capstone register in the fast array, or None."""
    return _REG_FAST.get(cs_reg)


def decode(m: Machine, addr: int) -> CsInsn:
    """The instruction at ``addr`` (original bytes, never a planted int3)."""
    try:
        code = m.read(addr, MAX_INSN_SIZE)
    except Exception:
        region = m.mem.region_at(addr)
        if region is None:
            raise ProbeError(errno.EINVAL, f"{addr:#x} is not mapped guest memory") from None
        code = m.read(addr, region.end - addr)
    insn = next(_cs.disasm(code, addr, 1), None)
    if insn is None:
        raise ProbeError(errno.EILSEQ, f"cannot decode an instruction at {m.symbolize(addr)} ({addr:#x})")
    if insn.id in _REFUSED:
        raise ProbeError(errno.EILSEQ,
                         f"{_REFUSED[insn.id]} at {m.symbolize(addr)} ({addr:#x}) cannot be probed")
    return insn


def decode_bytes(code: bytes, addr: int) -> CsInsn:
    """The instruction ``code`` holds, as if at ``addr`` (bytes kept from :func:`decode`)."""
    insn = next(_cs.disasm(code, addr, 1), None)
    assert insn is not None, "decode_bytes() takes bytes decode() already accepted"
    return insn


def check_boundary(m: Machine, addr: int) -> None:
    """Raise EILSEQ unless ``addr`` starts an instruction of its function."""
    sym = m.symbols.lookup(addr)
    if sym is None:
        # Like kallsyms_lookup_size_offset() failing: no function to decode from.
        raise ProbeError(errno.EILSEQ, f"{addr:#x} is not inside a known function")
    pos = sym.addr
    while pos < addr:
        code = m.read(pos, min(MAX_INSN_SIZE, max(addr - pos, 1) + MAX_INSN_SIZE))
        insn = next(_cs.disasm(code, pos, 1), None)
        if insn is None:
            raise ProbeError(errno.EILSEQ,
                             f"cannot decode {m.symbolize(pos)} on the way to {m.symbolize(addr)}")
        pos += insn.size
    if pos != addr:
        raise ProbeError(errno.EILSEQ,
                         f"{m.symbolize(addr)} ({addr:#x}) is not an instruction boundary")
