"""The x86-64 signal frame: ``struct rt_sigframe`` as the kernel writes it.

Layout from arch/x86/include/asm/sigframe.h and uapi/asm/sigcontext.h
(``setup_rt_frame``, ``get_sigframe``, ``restore_sigcontext`` in
arch/x86/kernel/signal.c and signal_64.c)::

    rt_sigframe: pretcode (sa_restorer) | ucontext (304 bytes) | siginfo (128 bytes)
    ucontext:    uc_flags | uc_link | uc_stack (ss_sp, ss_flags, ss_size)
                 | uc_mcontext (struct sigcontext, 256 bytes) | uc_sigmask (8 bytes)
    sigcontext:  r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags,
                 cs/gs/fs/ss, err, trapno, oldmask, cr2, fpstate, reserved[8]

The FPU/SSE state is written as an ``fxsave`` image (x87 control word, MXCSR,
xmm0..15) below the frame for handlers that read it; rt_sigreturn restores it
from the interrupted task's saved engine context, not from the image.
"""

from __future__ import annotations

import struct

from unicorn.x86_const import UC_X86_REG_FPCW, UC_X86_REG_FPSW, UC_X86_REG_MXCSR, UC_X86_REG_XMM0

from .._regtable import R8, R9, R10, R11, R12, R13, R14, R15, RAX, RBP, RBX, RCX, RDI, RDX, RSI, RSP

__all__ = ["FRAME_SIZE", "UC_OFFSET", "INFO_OFFSET", "FPSTATE_SIZE", "GREGS", "pack_frame",
           "unpack_ucontext", "fxsave_image", "REDZONE"]

# struct sigcontext's general registers, in its order (the fast register array's indices);
# rip and eflags follow.
GREGS = (R8, R9, R10, R11, R12, R13, R14, R15, RDI, RSI, RBP, RBX, RDX, RAX, RCX, RSP)
_SIGCONTEXT = struct.Struct("<16Q QQ HHHH QQQQ Q 64x")     # 256 bytes
_UCONTEXT_HEAD = struct.Struct("<QQ QiI Q")                 # flags, link, uc_stack
UC_OFFSET = 8
_MCONTEXT_OFFSET = _UCONTEXT_HEAD.size                      # 40
_SIGMASK_OFFSET = _MCONTEXT_OFFSET + _SIGCONTEXT.size       # 296
UCONTEXT_SIZE = _SIGMASK_OFFSET + 8                         # 304
INFO_OFFSET = UC_OFFSET + UCONTEXT_SIZE                     # 312
SIGINFO_SIZE = 128
FRAME_SIZE = INFO_OFFSET + SIGINFO_SIZE                     # 440
FPSTATE_SIZE = 512                                          # the fxsave image
REDZONE = 128
UC_SIGCONTEXT_SS, UC_STRICT_RESTORE_SS = 0x2, 0x4
USER_CS, USER_DS = 0x33, 0x2B


def pack_frame(*, restorer: int, gregs: list[int], rip: int, eflags: int, sigmask: int,
               altstack: tuple[int, int, int], info: bytes, fpstate: int, trapno: int = 0,
               err: int = 0, cr2: int = 0) -> bytes:
    """The bytes of one ``rt_sigframe`` (``gregs`` in :data:`GREGS` order)."""
    ss_sp, ss_flags, ss_size = altstack
    head = _UCONTEXT_HEAD.pack(UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS, 0, ss_sp, ss_flags, 0, ss_size)
    mcontext = _SIGCONTEXT.pack(*gregs, rip, eflags, USER_CS, 0, 0, USER_DS, err, trapno,
                                sigmask, cr2, fpstate)
    return (struct.pack("<Q", restorer) + head + mcontext + struct.pack("<Q", sigmask)
            + info.ljust(SIGINFO_SIZE, b"\0"))


def unpack_ucontext(data: bytes) -> tuple[list[int], int, int, int]:
    """``(gregs, rip, eflags, sigmask)`` of a ``ucontext`` (:data:`UCONTEXT_SIZE` bytes)."""
    fields = _SIGCONTEXT.unpack_from(data, _MCONTEXT_OFFSET)
    (sigmask,) = struct.unpack_from("<Q", data, _SIGMASK_OFFSET)
    return list(fields[:16]), fields[16], fields[17], sigmask


def fxsave_image(uc: object) -> bytes:
    """An ``fxsave`` image of the engine's x87 control/status words, MXCSR and xmm0..15."""
    out = bytearray(FPSTATE_SIZE)
    reg_read = uc.reg_read  # type: ignore[attr-defined]
    struct.pack_into("<HH", out, 0, reg_read(UC_X86_REG_FPCW) & 0xFFFF, reg_read(UC_X86_REG_FPSW) & 0xFFFF)
    struct.pack_into("<II", out, 24, reg_read(UC_X86_REG_MXCSR) & 0xFFFF_FFFF, 0xFFFF)
    for i in range(16):
        value = int(reg_read(UC_X86_REG_XMM0 + i)) & ((1 << 128) - 1)
        out[160 + 16 * i:176 + 16 * i] = value.to_bytes(16, "little")
    return bytes(out)
