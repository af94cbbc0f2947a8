"""Instructions executed by emulation instead of out of line.

The kernel emulates what cannot run from a slot (``prepare_emulation()`` in
arch/x86/kernel/kprobes/core.c: relative and indirect ``call``/``jmp``,
``jcc``, ``loop``/``jrcxz``, ``ret``) because their effect depends on where
they sit. This module does the same and adds ``push``/``pop`` of a register and
the no-ops (``nop``, ``endbr64``): the usual first instruction of a function,
so a kretprobe hit needs neither a slot nor a second trap.

A builder takes the decoded instruction and returns an *emulate op*: a closure
that applies the instruction to the live CPU and returns the next RIP (the
caller writes RIP, as the right way depends on the hook kind). A builder
returns None to say "run it out of line instead"; control flow it cannot
emulate raises ``EOPNOTSUPP``.

Invariant (a probe is invisible): an op touches guest memory only where the
CPU could, with the page permissions the engine enforces. An access the CPU
would fault on changes nothing: the op returns ``real()`` instead, the address
of an out-of-line copy of the instruction, which then faults there as the CPU
does (same reason, same address; ``Machine.rip_fixups`` reports it at the
probed instruction), like ``kprobe_fault_handler`` resetting the IP.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from types import CodeType

from capstone import CsInsn
from capstone import x86_const as X

from emu import Machine
from emu._memory import PROT_R, PROT_W, Memory
from emu._regtable import MASK64, RCX, RSP

from ..._errors import ProbeError
from ._decode import fast_index

__all__ = ["EmulateOp", "build_emulate_op", "is_control_flow"]

EmulateOp = Callable[[], int]
# Where the real instruction runs instead (an out-of-line copy), for an access
# that must fault as the CPU's; made on first use.
RealCopy = Callable[[], int]
_Builder = Callable[[Machine, CsInsn, RealCopy], EmulateOp | None]
_builders: dict[int, _Builder] = {}

_CF, _PF, _ZF, _SF, _OF = 1 << 0, 1 << 2, 1 << 6, 1 << 7, 1 << 11
_CONTROL_GROUPS = {X.X86_GRP_JUMP, X.X86_GRP_CALL, X.X86_GRP_RET, X.X86_GRP_IRET,
                   X.X86_GRP_BRANCH_RELATIVE}


def is_control_flow(insn: CsInsn) -> bool:
    return any(g in _CONTROL_GROUPS for g in insn.groups)


def _builder(*ids: int) -> Callable[[_Builder], _Builder]:
    def register(fn: _Builder) -> _Builder:
        for i in ids:
            _builders[i] = fn
        return fn
    return register


def shape_of(op: EmulateOp) -> object:
    """What ``op`` does, for the native core (probes/_native.c), which does the
    same in C: ``"nop"`` (RIP past it), ``("push", fast index)``, ``("pop", fast
    index)``, ``("jmp", target)``, ``("call", target)`` (relative ones) and
    ``("ret", bytes popped past the return address)``, or None. Where the stack
    word is not in plainly readable and writable memory the op itself still
    runs, so a fault comes out the same. Read from the op's code and closure, not
    stored on it: a function attribute would cost each probe a dict."""
    code = getattr(op, "__code__", None)
    if code is _NOP_CODE:
        return "nop"
    name = _SHAPES.get(code)        # type: ignore[arg-type]
    if name is None or op.__closure__ is None:
        return None
    free = dict(zip(code.co_freevars, op.__closure__, strict=True))   # type: ignore[union-attr]
    operand = {"push": "idx", "pop": "idx", "jmp": "target", "call": "target", "ret": "extra"}[name]
    return (name, free[operand].cell_contents)


def build_emulate_op(m: Machine, insn: CsInsn, real: RealCopy) -> EmulateOp | None:
    builder = _builders.get(insn.id)
    op = builder(m, insn, real) if builder is not None else None
    if op is None and is_control_flow(insn):
        raise ProbeError(errno.EOPNOTSUPP,
                         f"'{insn.mnemonic} {insn.op_str}' at {m.symbolize(insn.address)} "
                         "cannot be single-stepped out of line nor emulated")
    return op


def _op16(insn: CsInsn) -> bool:
    return insn.prefix[2] == 0x66


def _addr32(insn: CsInsn) -> bool:
    return insn.prefix[3] == 0x67


def _far(insn: CsInsn) -> bool:
    """``jmp far``/``call far`` through memory (FF /5, FF /3): a segment change."""
    return insn.opcode[0] == 0xFF and (insn.modrm >> 3) & 7 in (3, 5)


# --- guest memory as the CPU sees it ------------------------------------------------
_U64 = struct.Struct("<Q")
_pack_into, _unpack_from = _U64.pack_into, _U64.unpack_from


def _allowed(mem: Memory, addr: int, perm: int) -> bool:
    """The 8 bytes at ``addr`` are mapped with ``perm`` (the engine's check)."""
    end = addr + 8
    while addr < end:
        r = mem.region_at(addr)
        if r is None or not r.perms & perm:
            return False
        addr = r.end
    return True


def _u64_reader(mem: Memory) -> Callable[[int], int | None]:
    """``read(addr)``: the 8 bytes at ``addr``, or None where the CPU would fault."""
    region_at = mem.region_at

    def read(addr: int) -> int | None:
        r = region_at(addr)
        if r is not None and r.perms & PROT_R and addr + 8 <= r.end:
            return _unpack_from(r.buf, addr - r.start)[0]
        if addr < 0 or not _allowed(mem, addr, PROT_R):
            return None
        return mem.read_u64(addr)
    return read


def _u64_writer(mem: Memory) -> Callable[[int, int], bool]:
    """``write(addr, value)``: store a stack word; False (nothing written) where
    the CPU would fault."""
    region_at = mem.region_at

    def write(addr: int, value: int) -> bool:
        r = region_at(addr)
        if r is not None and r.perms & PROT_W and addr + 8 <= r.end:
            _pack_into(r.buf, addr - r.start, value)
            return True
        if addr < 0 or not _allowed(mem, addr, PROT_W):
            return False
        mem.write(addr, _U64.pack(value))        # straddles two regions
        return True
    return write


# --- operand evaluation ------------------------------------------------------------
def _operand_reader(m: Machine, insn: CsInsn) -> Callable[[], int | None] | None:
    """A closure reading the single operand of an indirect call/jmp (64-bit);
    it returns None where the CPU would fault on the read."""
    op = insn.operands[0]
    gpr = m.cpu.gpr
    if _far(insn):
        return None
    if op.type == X.X86_OP_REG:
        idx = fast_index(op.reg)
        return None if idx is None else (lambda: gpr[idx])
    if op.type != X.X86_OP_MEM or op.size != 8 or _addr32(insn):
        return None
    mem = op.mem
    nxt = insn.address + insn.size
    disp = mem.disp
    base = fast_index(mem.base) if mem.base not in (0, X.X86_REG_RIP) else None
    index = fast_index(mem.index) if mem.index else None
    if (mem.base not in (0, X.X86_REG_RIP) and base is None) or (mem.index and index is None):
        return None
    seg = {X.X86_REG_FS: "fs_base", X.X86_REG_GS: "gs_base"}.get(mem.segment)
    scale = mem.scale
    rip_rel = mem.base == X.X86_REG_RIP
    cpu, read_u64 = m.cpu, _u64_reader(m.mem)

    def read() -> int | None:
        ea = disp + (nxt if rip_rel else 0)
        if base is not None:
            ea += gpr[base]
        if index is not None:
            ea += gpr[index] * scale
        if seg is not None:
            ea += cpu.read(seg)
        return read_u64(ea & MASK64)
    return read


# --- builders ----------------------------------------------------------------------
@_builder(X.X86_INS_NOP, X.X86_INS_ENDBR64, X.X86_INS_ENDBR32)
def _nop(m: Machine, insn: CsInsn, real: RealCopy) -> EmulateOp:
    nxt = insn.address + insn.size

    def nop() -> int:
        return nxt
    return nop


@_builder(X.X86_INS_PUSH)
def _push(m: Machine, insn: CsInsn, real: RealCopy) -> EmulateOp | None:
    op = insn.operands[0]
    if _op16(insn):
        return None
    gpr, write_u64, nxt = m.cpu.gpr, _u64_writer(m.mem), insn.address + insn.size
    if op.type == X.X86_OP_IMM:
        value = op.imm & MASK64

        def push_imm() -> int:
            sp = gpr[RSP] - 8
            if not write_u64(sp, value):
                return real()
            gpr[RSP] = sp
            return nxt
        return push_imm
    idx = fast_index(op.reg) if op.type == X.X86_OP_REG else None
    if idx is None:
        return None

    def push_reg() -> int:
        sp = gpr[RSP] - 8
        if not write_u64(sp, gpr[idx]):  # push rsp stores the value before the decrement
            return real()
        gpr[RSP] = sp
        return nxt
    return push_reg


@_builder(X.X86_INS_POP)
def _pop(m: Machine, insn: CsInsn, real: RealCopy) -> EmulateOp | None:
    op = insn.operands[0]
    idx = fast_index(op.reg) if op.type == X.X86_OP_REG and not _op16(insn) else None
    if idx is None:
        return None
    gpr, read_u64, nxt = m.cpu.gpr, _u64_reader(m.mem), insn.address + insn.size

    def pop_reg() -> int:
        sp = gpr[RSP]
        value = read_u64(sp)
        if value is None:
            return real()
        gpr[RSP] = (sp + 8) & MASK64
        gpr[idx] = value             # pop rsp: the loaded value wins
        return nxt
    return pop_reg


@_builder(X.X86_INS_JMP)
def _jmp(m: Machine, insn: CsInsn, real: RealCopy) -> EmulateOp | None:
    op = insn.operands[0]
    if op.type == X.X86_OP_IMM:
        target = op.imm & MASK64

        def jmp_rel() -> int:
            return target
        return jmp_rel
    read = _operand_reader(m, insn)
    if read is None:
        return None

    def jmp_indirect() -> int:
        target = read()
        return real() if target is None else target
    return jmp_indirect


@_builder(X.X86_INS_CALL)
def _call(m: Machine, insn: CsInsn, real: RealCopy) -> EmulateOp | None:
    op = insn.operands[0]
    gpr, write_u64, nxt = m.cpu.gpr, _u64_writer(m.mem), insn.address + insn.size
    if op.type == X.X86_OP_IMM:
        target = op.imm & MASK64

        def call_rel() -> int:
            sp = gpr[RSP] - 8
            if not write_u64(sp, nxt):
                return real()
            gpr[RSP] = sp
            return target
        return call_rel
    read = _operand_reader(m, insn)
    if read is None:
        return None

    def call_indirect() -> int:
        target = read()              # before the push: the operand may use rsp
        sp = gpr[RSP] - 8
        if target is None or not write_u64(sp, nxt):
            return real()
        gpr[RSP] = sp
        return target
    return call_indirect


@_builder(X.X86_INS_RET)
def _ret(m: Machine, insn: CsInsn, real: RealCopy) -> EmulateOp | None:
    if _op16(insn):
        return None
    extra = insn.operands[0].imm if insn.operands else 0
    gpr, read_u64 = m.cpu.gpr, _u64_reader(m.mem)

    def ret() -> int:
        sp = gpr[RSP]
        target = read_u64(sp)
        if target is None:
            return real()
        gpr[RSP] = (sp + 8 + extra) & MASK64
        return target
    return ret


_JCC: dict[int, Callable[[int], bool]] = {
    X.X86_INS_JO: lambda f: bool(f & _OF),
    X.X86_INS_JNO: lambda f: not f & _OF,
    X.X86_INS_JB: lambda f: bool(f & _CF),
    X.X86_INS_JAE: lambda f: not f & _CF,
    X.X86_INS_JE: lambda f: bool(f & _ZF),
    X.X86_INS_JNE: lambda f: not f & _ZF,
    X.X86_INS_JBE: lambda f: bool(f & (_CF | _ZF)),
    X.X86_INS_JA: lambda f: not f & (_CF | _ZF),
    X.X86_INS_JS: lambda f: bool(f & _SF),
    X.X86_INS_JNS: lambda f: not f & _SF,
    X.X86_INS_JP: lambda f: bool(f & _PF),
    X.X86_INS_JNP: lambda f: not f & _PF,
    X.X86_INS_JL: lambda f: bool(f & _SF) != bool(f & _OF),
    X.X86_INS_JGE: lambda f: bool(f & _SF) == bool(f & _OF),
    X.X86_INS_JLE: lambda f: bool(f & _ZF) or bool(f & _SF) != bool(f & _OF),
    X.X86_INS_JG: lambda f: not f & _ZF and bool(f & _SF) == bool(f & _OF),
}


@_builder(*_JCC)
def _jcc(m: Machine, insn: CsInsn, real: RealCopy) -> EmulateOp:
    taken_if = _JCC[insn.id]
    target, nxt, cpu = insn.operands[0].imm & MASK64, insn.address + insn.size, m.cpu
    return lambda: target if taken_if(cpu.eflags) else nxt


@_builder(X.X86_INS_LOOP, X.X86_INS_LOOPE, X.X86_INS_LOOPNE, X.X86_INS_JRCXZ, X.X86_INS_JECXZ)
def _loop(m: Machine, insn: CsInsn, real: RealCopy) -> EmulateOp:
    gpr, cpu, kind = m.cpu.gpr, m.cpu, insn.id
    target, nxt = insn.operands[0].imm & MASK64, insn.address + insn.size
    mask = 0xFFFF_FFFF if _addr32(insn) or kind == X.X86_INS_JECXZ else MASK64

    def loop() -> int:
        count = gpr[RCX] & mask
        if kind in (X.X86_INS_JRCXZ, X.X86_INS_JECXZ):
            return target if count == 0 else nxt
        count = (count - 1) & mask
        gpr[RCX] = (gpr[RCX] & ~mask & MASK64) | count
        taken = count != 0
        if kind == X.X86_INS_LOOPE:
            taken = taken and bool(cpu.eflags & _ZF)
        elif kind == X.X86_INS_LOOPNE:
            taken = taken and not cpu.eflags & _ZF
        return target if taken else nxt
    return loop


def _inner_code(builder: Callable[..., object], name: str) -> CodeType:
    return next(c for c in builder.__code__.co_consts if isinstance(c, CodeType) and c.co_name == name)


# The ops shape_of recognizes, by their code.
_NOP_CODE = _inner_code(_nop, "nop")
_SHAPES: dict[CodeType, str] = {
    _inner_code(_push, "push_reg"): "push", _inner_code(_pop, "pop_reg"): "pop",
    _inner_code(_jmp, "jmp_rel"): "jmp", _inner_code(_call, "call_rel"): "call",
    _inner_code(_ret, "ret"): "ret",
}
