"""Memory system calls: brk, mmap, munmap, mprotect, mremap, madvise (``mm/``).

File mappings are private copies of the file's bytes (no write-back, even for
``MAP_SHARED``: one process has no one to share with), copied in bounded chunks
and no further than the file's end. Each is recorded in ``Machine.objects``,
which recognises the shared objects the interpreter maps. Of the other files
only ``/dev/zero`` can be mapped (as anonymous memory); the rest are ``ENODEV``,
as files without an ``mmap`` operation are.

Addresses are checked as ``mm/mmap.c`` (``do_mmap``, ``__get_unmapped_area``,
``security_mmap_addr``) checks them: a fixed mapping past ``TASK_SIZE`` is
``ENOMEM``, a misaligned one ``EINVAL``, one below ``mmap_min_addr`` ``EPERM``
(the guest is not root).
"""

from __future__ import annotations

import errno

from .._memory import PAGE, page_up
from ._files import HostFile, OpenFile
from ._kernel import Kernel
from ._mm import ANON, HEAP, MMAP_MIN_ADDR, STACK, TASK_SIZE, prot_to_perms
from ._registry import KernelError, s32, syscall
from ._vnode import mmap_source

# include/uapi/asm-generic/mman-common.h, mman.h
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_FIXED_NOREPLACE = 0x100000
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
MADV_DONTNEED = 4
_COPY_CHUNK = 1 << 20          # a file mapping is read this much at a time
_LOFF_MAX = (1 << 63) - 1


def _check_range(addr: int, length: int) -> int:
    """``munmap``'s checks (``do_vmi_munmap``)."""
    if addr % PAGE or not 0 < length or addr > TASK_SIZE or length > TASK_SIZE - addr:
        raise KernelError(errno.EINVAL)
    return page_up(length)


def _fixed_start(k: Kernel, addr: int, size: int, replace: bool) -> int:
    """Where a ``MAP_FIXED`` (or ``MAP_FIXED_NOREPLACE``) mapping may go, in
    ``__get_unmapped_area``'s order of checks."""
    if addr > TASK_SIZE - size:
        raise KernelError(errno.ENOMEM)
    if addr % PAGE:
        raise KernelError(errno.EINVAL)
    if addr < MMAP_MIN_ADDR:
        raise KernelError(errno.EPERM)          # cap_mmap_addr: no CAP_SYS_RAWIO
    if not replace and not k.mm.is_free(addr, size):
        raise KernelError(errno.EEXIST)
    return addr


def _mapped_file(k: Kernel, fd: int) -> OpenFile | None:
    """The file to copy into a mapping (a host file, an in-memory one of /tmp or
    memfd_create); ``None`` for ``/dev/zero`` (anonymous memory); ``ENODEV`` for
    the rest (``vnode.mmap_source``)."""
    return mmap_source(k.files[s32(fd)])


def _copy_file(k: Kernel, f: OpenFile, start: int, length: int, offset: int) -> None:
    """Copy the file's bytes from ``offset`` into the mapping, a chunk at a time."""
    pos = 0
    while pos < length:
        want = min(_COPY_CHUNK, length - pos)
        data = f.pread(want, offset + pos)
        if data:
            k.mem.write(start + pos, data)
        if len(data) < want:
            return
        pos += want


@syscall("brk")
def sys_brk(k: Kernel, addr: int) -> int:
    return k.mm.set_brk(addr)


@syscall("mmap")
def sys_mmap(k: Kernel, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
    f = None if flags & MAP_ANONYMOUS else _mapped_file(k, fd)
    if not length or offset % PAGE:
        raise KernelError(errno.EINVAL)
    if length > TASK_SIZE:
        raise KernelError(errno.ENOMEM)
    size = page_up(length)
    if f is not None and offset + size > _LOFF_MAX:
        raise KernelError(errno.EOVERFLOW)         # file_mmap_ok(): past MAX_LFS_FILESIZE
    fixed = bool(flags & MAP_FIXED)
    if fixed or flags & MAP_FIXED_NOREPLACE:
        start = _fixed_start(k, addr, size, replace=fixed)
    else:
        start = k.mm.find_free(size, addr & ~(PAGE - 1))
    perms = prot_to_perms(prot)
    name = ANON if f is None else f.realpath if isinstance(f, HostFile) else f.path
    k.mm.map(start, size, perms, name, fixed=fixed)
    if f is not None:
        _copy_file(k, f, start, length, offset)
        if isinstance(f, HostFile):         # a shared object the interpreter maps is a host file
            k.m.objects.note_file_mapping(f.path, f.realpath, offset, start, start + size, perms)
    return start


@syscall("munmap")
def sys_munmap(k: Kernel, addr: int, length: int) -> int:
    k.mm.unmap(addr, _check_range(addr, length))
    return 0


@syscall("mprotect")
def sys_mprotect(k: Kernel, addr: int, length: int, prot: int) -> int:
    if addr % PAGE:
        raise KernelError(errno.EINVAL)
    if not length:
        return 0
    if addr + page_up(length) > TASK_SIZE:
        raise KernelError(errno.ENOMEM)         # nothing is mapped up there
    k.mm.protect(addr, page_up(length), prot_to_perms(prot))
    return 0


@syscall("mremap")
def sys_mremap(k: Kernel, old: int, old_size: int, new_size: int, flags: int) -> int:
    if old % PAGE or not new_size or flags & MREMAP_FIXED:
        raise KernelError(errno.EINVAL)
    return k.mm.remap(old, old_size, new_size, bool(flags & MREMAP_MAYMOVE))


@syscall("madvise")
def sys_madvise(k: Kernel, addr: int, length: int, advice: int) -> int:
    """Advice is free to ignore, except ``MADV_DONTNEED`` on anonymous memory,
    which the C library relies on reading back as zeros: its host pages are
    given back (never written, so untouched memory stays untouched)."""
    if addr % PAGE or addr + page_up(length) > 1 << 64:
        raise KernelError(errno.EINVAL)
    if advice == MADV_DONTNEED and length:
        end = addr + page_up(length)
        for r in k.mem.regions_in(addr, end):
            if r.name in (ANON, HEAP, STACK):
                k.mem.discard(max(r.start, addr), min(r.end, end))
    return 0


@syscall("msync", "mlock", "munlock", "mlockall", "munlockall")
def sys_mm_noop(k: Kernel) -> int:
    return 0
