"""The initial process stack, laid out as ``fs/binfmt_elf.c:create_elf_tables`` does.

From high to low addresses::

    8 zero bytes (end marker)        <- top of the stack region
    execfn string                       AT_EXECFN points here
    envp strings, argv strings          (argv[0] lowest)
    "x86_64" (AT_PLATFORM), 16 random bytes (AT_RANDOM)
    padding to 16 bytes
    auxv pairs, ending with AT_NULL
    NULL, envp[envc-1] .. envp[0]
    NULL, argv[argc-1] .. argv[0]
    argc                             <- rsp at entry, 16-byte aligned (psABI 3.4.1)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ._memory import Memory

__all__ = ["ProcessImage", "build_stack", "AT"]

# Auxiliary vector types (include/uapi/linux/auxvec.h, arch/x86/include/uapi/asm/auxvec.h)
AT = {
    "AT_NULL": 0, "AT_PHDR": 3, "AT_PHENT": 4, "AT_PHNUM": 5, "AT_PAGESZ": 6, "AT_BASE": 7,
    "AT_FLAGS": 8, "AT_ENTRY": 9, "AT_UID": 11, "AT_EUID": 12, "AT_GID": 13, "AT_EGID": 14,
    "AT_PLATFORM": 15, "AT_HWCAP": 16, "AT_CLKTCK": 17, "AT_SECURE": 23, "AT_RANDOM": 25,
    "AT_HWCAP2": 26, "AT_EXECFN": 31,
}
PLATFORM = b"x86_64\0"
# CPUID.1:EDX of the emulated CPU family (fpu..sse2), what the kernel reports as ELF_HWCAP.
HWCAP = 0x078BFBFF
CLKTCK = 100


@dataclass(frozen=True)
class ProcessImage:
    """What the auxiliary vector tells the program about itself."""

    phdr: int       # AT_PHDR: run-time address of the program headers
    phnum: int
    entry: int      # AT_ENTRY: the executable's entry (not the interpreter's)
    interp_base: int  # AT_BASE: 0 without an interpreter
    uid: int
    gid: int


def build_stack(mem: Memory, top: int, argv: Sequence[bytes], envp: Sequence[bytes],
                execfn: bytes, image: ProcessImage, random16: bytes) -> int:
    """Write argc, argv, envp and auxv below ``top``; return the initial rsp."""
    sp = top - 8
    mem.write(sp, bytes(8))
    sp, execfn_addr = _push_bytes(mem, sp, execfn + b"\0")
    env_addrs = []
    for s in reversed(envp):
        sp, addr = _push_bytes(mem, sp, s + b"\0")
        env_addrs.append(addr)
    arg_addrs = []
    for s in reversed(argv):
        sp, addr = _push_bytes(mem, sp, s + b"\0")
        arg_addrs.append(addr)
    sp, platform = _push_bytes(mem, sp & ~0xF, PLATFORM)
    sp, rand = _push_bytes(mem, sp & ~0xF, random16)
    auxv = _auxv(image, platform, rand, execfn_addr)
    words = [len(argv), *reversed(arg_addrs), 0, *reversed(env_addrs), 0, *auxv]
    sp = (sp - 8 * len(words)) & ~0xF
    mem.write(sp, struct.pack(f"<{len(words)}Q", *words))
    return sp


def _push_bytes(mem: Memory, sp: int, data: bytes) -> tuple[int, int]:
    sp -= len(data)
    mem.write(sp, data)
    return sp, sp


def _auxv(image: ProcessImage, platform: int, rand: int, execfn: int) -> list[int]:
    pairs = [
        ("AT_HWCAP", HWCAP), ("AT_PAGESZ", 4096), ("AT_CLKTCK", CLKTCK),
        ("AT_PHDR", image.phdr), ("AT_PHENT", 56), ("AT_PHNUM", image.phnum),
        ("AT_BASE", image.interp_base), ("AT_FLAGS", 0), ("AT_ENTRY", image.entry),
        ("AT_UID", image.uid), ("AT_EUID", image.uid), ("AT_GID", image.gid),
        ("AT_EGID", image.gid), ("AT_SECURE", 0), ("AT_RANDOM", rand), ("AT_HWCAP2", 0),
        ("AT_EXECFN", execfn), ("AT_PLATFORM", platform), ("AT_NULL", 0),
    ]
    out: list[int] = []
    for name, value in pairs:
        out += (AT[name], value)
    return out
