"""x86-64 register tables: names, Unicorn ids and positions in QEMU's ``CPUX86State``.

QEMU keeps the sixteen general-purpose registers in ``env->regs[]`` in hardware
encoding order (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15), followed by
``env->eip``; :mod:`emu._cpu` exposes that block as a 17-entry array.
"""

from __future__ import annotations

from unicorn import x86_const as _x

# Index in the fast register array (hardware encoding order, then RIP).
RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)
R8, R9, R10, R11, R12, R13, R14, R15 = range(8, 16)
RIP = 16
NR_FAST = 17

FAST_NAMES: tuple[str, ...] = (
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip",
)

FAST_INDEX: dict[str, int] = {name: i for i, name in enumerate(FAST_NAMES)}

UC_ID: dict[str, int] = {
    "rax": _x.UC_X86_REG_RAX, "rcx": _x.UC_X86_REG_RCX, "rdx": _x.UC_X86_REG_RDX,
    "rbx": _x.UC_X86_REG_RBX, "rsp": _x.UC_X86_REG_RSP, "rbp": _x.UC_X86_REG_RBP,
    "rsi": _x.UC_X86_REG_RSI, "rdi": _x.UC_X86_REG_RDI, "r8": _x.UC_X86_REG_R8,
    "r9": _x.UC_X86_REG_R9, "r10": _x.UC_X86_REG_R10, "r11": _x.UC_X86_REG_R11,
    "r12": _x.UC_X86_REG_R12, "r13": _x.UC_X86_REG_R13, "r14": _x.UC_X86_REG_R14,
    "r15": _x.UC_X86_REG_R15, "rip": _x.UC_X86_REG_RIP, "eflags": _x.UC_X86_REG_EFLAGS,
    "fs_base": _x.UC_X86_REG_FS_BASE, "gs_base": _x.UC_X86_REG_GS_BASE,
}

# System V AMD64 integer argument registers, in order.
ARG_REGS: tuple[int, ...] = (RDI, RSI, RDX, RCX, R8, R9)

MASK64 = (1 << 64) - 1


def to_signed64(value: int) -> int:
    """Reinterpret a 64-bit unsigned value as two's-complement signed."""
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value
