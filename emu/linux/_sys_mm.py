"""Memory system calls: brk, mmap, munmap, mprotect, mremap, madvise (``mm/``).

File mappings are private copies of the file's bytes (no write-back, even for
``MAP_SHARED``: one process has no one to share with). Each is recorded in
``Machine.objects``, which recognises the shared objects the interpreter maps.
"""

from __future__ import annotations

import errno

from .._memory import PAGE, page_up
from ._files import HostFile
from ._kernel import Kernel
from ._mm import ANON, HEAP, prot_to_perms
from ._registry import KernelError, s32, syscall

# include/uapi/asm-generic/mman-common.h, mman.h
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_FIXED_NOREPLACE = 0x100000
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
MADV_DONTNEED = 4
_MAX_MAP = 1 << 40


def _check_range(addr: int, length: int) -> int:
    if addr % PAGE or not 0 < length <= _MAX_MAP:
        raise KernelError(errno.EINVAL)
    return page_up(length)


@syscall("brk")
def sys_brk(k: Kernel, addr: int) -> int:
    return k.mm.set_brk(addr)


@syscall("mmap")
def sys_mmap(k: Kernel, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
    if not 0 < length <= _MAX_MAP or offset % PAGE:
        raise KernelError(errno.EINVAL)
    size = page_up(length)
    fixed = bool(flags & MAP_FIXED)
    if fixed or flags & MAP_FIXED_NOREPLACE:
        if addr % PAGE:
            raise KernelError(errno.EINVAL)
        if not fixed and not k.mm.is_free(addr, size):
            raise KernelError(errno.EEXIST)
        start = addr
    else:
        start = k.mm.find_free(size, addr & ~(PAGE - 1))
    f = None if flags & MAP_ANONYMOUS else k.files[s32(fd)]
    if f is not None and not isinstance(f, HostFile):
        raise KernelError(errno.EACCES)
    perms = prot_to_perms(prot)
    k.mm.map(start, size, perms, f.realpath if f else ANON, fixed=fixed)
    if f is not None:
        data = f.pread(length, offset)
        if data:
            k.mem.write(start, data)
        k.m.objects.note_file_mapping(f.path, f.realpath, offset, start, start + size, perms)
    return start


@syscall("munmap")
def sys_munmap(k: Kernel, addr: int, length: int) -> int:
    k.mm.unmap(addr, _check_range(addr, length))
    return 0


@syscall("mprotect")
def sys_mprotect(k: Kernel, addr: int, length: int, prot: int) -> int:
    if not length:
        return 0
    k.mm.protect(addr, _check_range(addr, length), prot_to_perms(prot))
    return 0


@syscall("mremap")
def sys_mremap(k: Kernel, old: int, old_size: int, new_size: int, flags: int) -> int:
    if old % PAGE or not new_size or flags & MREMAP_FIXED:
        raise KernelError(errno.EINVAL)
    return k.mm.remap(old, old_size, new_size, bool(flags & MREMAP_MAYMOVE))


@syscall("madvise")
def sys_madvise(k: Kernel, addr: int, length: int, advice: int) -> int:
    """Advice is free to ignore, except ``MADV_DONTNEED`` on anonymous memory,
    which the C library relies on reading back as zeros."""
    if addr % PAGE:
        raise KernelError(errno.EINVAL)
    if advice == MADV_DONTNEED and length:
        end = addr + page_up(length)
        for r in k.mem.regions_in(addr, end):
            if r.name in (ANON, HEAP):
                lo, hi = max(r.start, addr), min(r.end, end)
                k.mem.write(lo, bytes(hi - lo))
    return 0


@syscall("msync", "mlock", "munlock", "mlockall", "munlockall")
def sys_mm_noop(k: Kernel) -> int:
    return 0
