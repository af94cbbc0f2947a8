"""Loading an ELF program into a machine (``fs/binfmt_elf.c:load_elf_binary``).

The loader does what ``execve`` does and no more: map the executable's
``PT_LOAD`` segments (``ET_EXEC`` at their addresses, ``ET_DYN`` at
:data:`PIE_BASE`), map the ``PT_INTERP`` interpreter if there is one (top-down,
as the kernel's ``mmap`` would), set the program break after the executable,
build the initial stack (:mod:`emu._initstack`), clear the registers
(``ELF_PLAT_INIT``) and start the syscall layer. The interpreter then maps the
shared libraries itself, through the guest's ``openat`` and ``mmap``.

What it reads is bounded: regular files of at most ``MAX_ELF_SIZE`` bytes
(:func:`emu._elfhdr.read_elf_bytes`), an interpreter only from the system
library directories or under ``fs_root`` (any other ``PT_INTERP`` is "not
allowed", whether or not it exists), and an image that fits the machine's
``mem_limit``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from unicorn.x86_const import (
    UC_X86_REG_FS_BASE,
    UC_X86_REG_GS_BASE,
)

from ._elfhdr import ET_DYN, ET_EXEC, PF_R, PF_W, PF_X, ElfFile, read_elf
from ._errors import EmuError, LoadError
from ._initstack import ProcessImage, build_stack
from ._memory import PROT_R, PROT_RW, PROT_W, PROT_X, Memory, Region, page_down, page_up
from ._objects import EXE, INTERP
from ._regtable import NR_FAST, RIP, RSP
from .linux import SYSTEM_LIBRARY_DIRS, AddressSpace, Diagnostics, FsPolicy, Kernel, KernelError
from .linux._files import InputFile, Stdin
from .linux._kernel import GID, UID

if TYPE_CHECKING:
    from ._machine import Machine

__all__ = ["load_program", "PIE_BASE", "PROCESS_STACK_SIZE"]

_USER_TOP = 0x7FFF_FFFF_F000         # the 47-bit user address space
PIE_BASE = 0x5555_5555_4000        # ELF_ET_DYN_BASE, no randomisation (what gdb shows)
PROCESS_STACK_SIZE = 8 << 20       # RLIMIT_STACK of a fresh shell
_MMAP_GAP = 1 << 20                # between the stack and the top of the mmap area
# Machine.call() outside a run puts its frame at the top of the main stack:
# keep the process's strings and vectors below that.
_CALL_SCRATCH = 0x1000
_MMAP_MIN_ADDR = 0x10000
_PF_TO_PROT = {PF_R: PROT_R, PF_W: PROT_W, PF_X: PROT_X}
_INIT_REGS = {UC_X86_REG_FS_BASE: 0, UC_X86_REG_GS_BASE: 0}   # FPU state: Machine()

Env = Mapping[str, str] | Sequence[str] | None


def load_program(m: Machine, path: str, argv: Sequence[str | bytes] | None = None,
                 env: Env = None, stdin: Stdin = b"", fs_root: str | None = None,
                 fs_writable: bool = False, seed: int = 0, *, policy: FsPolicy | None = None,
                 diagnostics: Diagnostics | None = None) -> Kernel:
    """Load the program at ``path`` into the fresh machine ``m``, ready to run.

    Args:
        stdin: the bytes its standard input holds, or a binary stream read when
            the guest reads.

    Raises:
        LoadError: the program or its interpreter is missing, unreadable, not a
            regular file, too big, truncated, not x86-64 ELF, not allowed (an
            interpreter outside the library directories and ``fs_root``), or does
            not fit the address space or ``mem_limit``.
    """
    exe = read_elf(path)
    if policy is None:
        try:
            policy = FsPolicy(fs_root, fs_writable, files=(path,))
        except OSError as exc:
            raise LoadError(str(exc)) from None
    rng = random.Random(seed)                 # AT_RANDOM first, then the kernel's getrandom
    mm, entry = _load_image(m, exe, path, _argv(path, argv), _env(env), policy, rng.randbytes(16),
                            UID, GID, path)
    k = Kernel(m, policy, mm, exe_path=os.path.realpath(path), seed=seed, diagnostics=diagnostics)
    k.rng = rng
    k.files.install(InputFile(stdin), 0)        # bytes, or a host stream read on demand
    k.entry = entry
    m.tasks[0].comm = os.path.basename(path)[:15]      # __set_task_comm at exec
    k.install()
    return k


def exec_image(m: Machine, path: str, argv: Sequence[bytes], envp: Sequence[bytes], policy: FsPolicy,
               random16: bytes, uid: int, gid: int, shown_path: str) -> tuple[AddressSpace, int]:
    """``execve``'s half of :func:`load_program`: load ``path`` (a host path the
    caller resolved through ``policy``) into the fresh machine ``m``, with its
    stack and registers, for a process that exists already.

    Returns:
        The address space and the entry point.

    Raises:
        LoadError: as :func:`load_program`.
    """
    return _load_image(m, read_elf(path), path, argv, envp, policy, random16, uid, gid, shown_path)


def _load_image(m: Machine, exe: ElfFile, path: str, argv: Sequence[bytes], envp: Sequence[bytes],
                policy: FsPolicy, random16: bytes, uid: int, gid: int,
                shown_path: str) -> tuple[AddressSpace, int]:
    """Map ``exe`` (read from ``path``) and its interpreter, build the stack, set
    the registers: what :func:`load_program` and :func:`exec_image` share."""
    interp = _read_interp(path, exe, policy)
    try:
        mm, exe_base, interp_base = _map_program(m, path, exe, interp)
    except LoadError:
        raise
    except (EmuError, KernelError) as exc:      # over mem_limit, or no room left
        reason = str(exc) if isinstance(exc, EmuError) else "no room in the address space"
        raise LoadError(f"{path}: cannot map the program: {reason}") from None
    m.objects.add_object(exe, shown_path, exe_base, EXE)
    if interp is not None:
        m.objects.add_object(interp, interp.path, interp_base, INTERP)
    phdr = exe.phdr_vaddr + exe_base if exe.phdr_vaddr is not None else 0
    for what, value in (("entry point", exe.entry + exe_base), ("PT_PHDR address", phdr)):
        if not 0 <= value < _USER_TOP:
            raise LoadError(f"{path}: {what} {value:#x} is outside user space")
    image = ProcessImage(phdr=phdr, phnum=exe.phnum, entry=exe.entry + exe_base, interp_base=interp_base,
                         uid=uid, gid=gid)
    sp = build_stack(m.mem, m.tasks[0].stack.end - _CALL_SCRATCH, list(argv), list(envp),
                     os.fsencode(shown_path), image, random16)
    entry = interp.entry + interp_base if interp is not None else image.entry
    # Where the kernel (or the interpreter) jumps: never called, no return address.
    m.entry_points = {image.entry, entry}
    _initial_registers(m, sp, entry)
    m.tasks[0].context = m._uc.context_save()
    return mm, entry


def _map_program(m: Machine, path: str, exe: ElfFile,
                 interp: ElfFile | None) -> tuple[AddressSpace, int, int]:
    """Map the stack, the executable and its interpreter; the address space and both biases."""
    stack = _process_stack(m)
    mm = AddressSpace(m.mem, stack.start - _MMAP_GAP)
    exe_base = PIE_BASE if exe.e_type == ET_DYN else 0
    map_image(m.mem, exe, exe_base, os.path.abspath(path))
    mm.brk_start = mm.brk = page_up(exe.high + exe_base)
    interp_base = 0
    if interp is not None:
        interp_base = mm.find_free(page_up(interp.high) - interp.low) - interp.low
        map_image(m.mem, interp, interp_base, interp.path)
    return mm, exe_base, interp_base


def _read_interp(path: str, exe: ElfFile, policy: FsPolicy) -> ElfFile | None:
    """The ``PT_INTERP`` interpreter, from an allowed place only: a denied path is
    refused before anything looks at it, so the message tells nothing about it."""
    if exe.interp is None:
        return None
    shown = exe.interp if exe.interp.isprintable() else repr(exe.interp)
    if not policy.allows_code(os.path.realpath(exe.interp)):
        raise LoadError(f"{path}: interpreter {shown} (PT_INTERP) is not allowed: not found under the "
                        f"system library directories ({', '.join(SYSTEM_LIBRARY_DIRS)}) or --fs-root")
    if not os.path.exists(exe.interp):
        raise LoadError(f"{path}: interpreter {shown} (PT_INTERP) not found")
    interp = read_elf(exe.interp)
    if interp.e_type != ET_DYN or interp.interp is not None:
        raise LoadError(f"{path}: interpreter {exe.interp} is not a self-contained shared object")
    return interp


def _process_stack(m: Machine) -> Region:
    """Give the main task a stack as big as a shell's (it is mapped lazily by the host)."""
    task = m.tasks[0]
    top = task.stack.end
    m.mem.unmap(task.stack)
    task.stack = m.mem.map(top - PROCESS_STACK_SIZE, PROCESS_STACK_SIZE, PROT_RW, "[stack]")
    return task.stack


def map_image(mem: Memory, elf: ElfFile, bias: int, name: str) -> None:
    """Map the ``PT_LOAD`` segments of ``elf`` at ``bias``, as ``elf_map`` does.

    Segments that share a page share one mapping, with the union of their
    permissions; the bytes past ``p_filesz`` are zero (the bss).
    """
    if elf.e_type == ET_EXEC and bias:
        raise LoadError(f"{elf.path}: ET_EXEC cannot be relocated")
    for seg in elf.loads:
        lo, hi = page_down(seg.vaddr + bias), page_up(seg.vaddr + seg.memsz + bias)
        if lo < _MMAP_MIN_ADDR or hi > 0x7FFF_FFFF_F000:
            raise LoadError(f"{elf.path}: segment at {seg.vaddr + bias:#x} is outside user space")
        perms = _perms(seg.flags)
        _map_fresh(mem, lo, hi, perms, name, elf.path)
        data = elf.data[seg.offset:seg.offset + seg.filesz]
        mem.write(seg.vaddr + bias, data)


def _map_fresh(mem: Memory, lo: int, hi: int, perms: int, name: str, path: str) -> None:
    addr = lo
    for r in mem.regions_in(lo, hi):
        if r.name != name:
            raise LoadError(f"{path}: segment {lo:#x}-{hi:#x} overlaps {r.name} at {r.start:#x}")
        if r.start > addr:
            mem.map(addr, r.start - addr, perms, name)
        mem.protect(max(r.start, lo), min(r.end, hi), r.perms | perms)
        addr = r.end
    if addr < hi:
        mem.map(addr, hi - addr, perms, name)


def _perms(flags: int) -> int:
    perms = 0
    for flag, prot in _PF_TO_PROT.items():
        if flags & flag:
            perms |= prot
    return perms | PROT_R if perms else 0


def _argv(path: str, argv: Sequence[str | bytes] | None) -> list[bytes]:
    return [os.fsencode(a) for a in (argv if argv is not None else [path])]


def _env(env: Env) -> list[bytes]:
    if env is None:
        return []
    if isinstance(env, Mapping):
        return [os.fsencode(f"{k}={v}") for k, v in env.items()]
    return [os.fsencode(e) for e in env]


def _initial_registers(m: Machine, sp: int, entry: int) -> None:
    """``ELF_PLAT_INIT``: every general register zero (rdx: no ``rtld_fini``), and
    the FPU in its init state (``fpstate_init_fstate``): Unicorn starts with a zero
    control word, i.e. single precision and unmasked exceptions, which breaks
    long double arithmetic (musl's printf rounds wrongly)."""
    gpr = m.cpu.gpr
    for i in range(NR_FAST):
        gpr[i] = 0
    gpr[RSP] = sp
    gpr[RIP] = entry
    for reg, value in _INIT_REGS.items():
        m._uc.reg_write(reg, value)

