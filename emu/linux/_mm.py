"""The guest's address space: ``brk``, ``mmap`` and friends (``mm/mmap.c``, ``mm/mremap.c``).

Placement follows the kernel's top-down layout: ``mmap`` without a usable hint
takes the highest free gap below ``mmap_top`` (under the stack), the heap
grows up from the end of the executable's bss.

Only regions the guest owns (its image, stack, heap and its own mappings) can be
unmapped, remapped or re-protected by the guest; the emulator's own regions
(probe trampolines, out-of-line slots) are invisible to it: ``munmap`` and
``mprotect`` skip them and ``MAP_FIXED`` over them fails with ``ENOMEM``.
"""

from __future__ import annotations

import errno

from .._memory import PAGE, PROT_R, PROT_W, PROT_X, Memory, Region, page_up
from ._registry import KernelError

__all__ = ["AddressSpace", "ANON", "HEAP"]

ANON, HEAP, STACK = "[anon]", "[heap]", "[stack]"
_GUEST_NAMES = frozenset({ANON, HEAP, STACK})
_LOWEST = 0x10000                # mmap_min_addr
_TASK_SIZE = 0x7FFF_FFFF_F000


def guest_owned(region: Region) -> bool:
    """Regions of the guest are named by a file path or one of ANON, HEAP, STACK."""
    return region.name.startswith("/") or region.name in _GUEST_NAMES


def prot_to_perms(prot: int) -> int:
    """x86 without protection keys: write and execute imply read."""
    perms = prot & (PROT_R | PROT_W | PROT_X)
    return perms | PROT_R if perms else 0


class AddressSpace:
    """Placement and bookkeeping of the guest's mappings over :class:`emu._memory.Memory`."""

    def __init__(self, mem: Memory, mmap_top: int) -> None:
        self.mem = mem
        self.mmap_top = mmap_top & ~(PAGE - 1)
        self.brk_start = 0
        self.brk = 0

    # --- placement ---------------------------------------------------------------
    def is_free(self, start: int, size: int) -> bool:
        return _LOWEST <= start and start + size <= _TASK_SIZE and not self.mem.overlaps(start, start + size)

    def find_free(self, size: int, hint: int = 0) -> int:
        """A free page-aligned range of ``size`` bytes: ``hint`` if free, else top-down."""
        size = page_up(size)
        if hint and hint % PAGE == 0 and self.is_free(hint, size):
            return hint
        end = self.mmap_top
        for r in reversed(self.mem.regions):
            if r.start >= end:
                continue
            if end - r.end >= size:
                break
            end = r.start
        if end - size < _LOWEST:
            raise KernelError(errno.ENOMEM)
        return end - size

    # --- operations ----------------------------------------------------------------
    def map(self, start: int, size: int, perms: int, name: str, *, fixed: bool = False) -> Region:
        """Map ``[start, start+size)``; with ``fixed``, replace the guest's mappings there."""
        if fixed:
            if any(not guest_owned(r) for r in self.mem.regions_in(start, start + size)):
                raise KernelError(errno.ENOMEM)
            self.mem.unmap_range(start, start + size)
        elif not self.is_free(start, size):
            raise KernelError(errno.ENOMEM)
        region = self.mem.map(start, size, perms, name)
        self.mem.invalidate_code(start, start + size)
        return region

    def unmap(self, start: int, size: int) -> None:
        for r in self.mem.regions_in(start, start + size):
            if guest_owned(r):
                self.mem.unmap_range(max(r.start, start), min(r.end, start + size))

    def protect(self, start: int, size: int, perms: int) -> None:
        regions = self.mem.regions_in(start, start + size)
        covered = sum(min(r.end, start + size) - max(r.start, start) for r in regions)
        if covered != size:
            raise KernelError(errno.ENOMEM)
        for r in regions:
            if guest_owned(r):
                self.mem.protect(max(r.start, start), min(r.end, start + size), perms)

    def set_brk(self, addr: int) -> int:
        """``brk(addr)``: move the program break; return the new (or unchanged) break."""
        if addr < self.brk_start:
            return self.brk
        old_end, new_end = page_up(self.brk), page_up(addr)
        if new_end > old_end:
            if not self.is_free(old_end, new_end - old_end):
                return self.brk
            self.mem.map(old_end, new_end - old_end, PROT_R | PROT_W, HEAP)
        elif new_end < old_end:
            self.mem.unmap_range(new_end, old_end)
        self.brk = addr
        return addr

    def remap(self, old: int, old_size: int, new_size: int, may_move: bool) -> int:
        """``mremap`` of a private mapping: shrink, grow in place, or move."""
        old_size, new_size = page_up(old_size), page_up(new_size)
        regions = self.mem.regions_in(old, old + old_size)
        if not regions or regions[0].start > old or not all(guest_owned(r) for r in regions):
            raise KernelError(errno.EFAULT)
        if new_size <= old_size:
            self.unmap(old + new_size, old_size - new_size)
            return old
        last = regions[-1]
        if self.is_free(old + old_size, new_size - old_size):
            self.mem.map(old + old_size, new_size - old_size, last.perms, last.name)
            return old
        if not may_move:
            raise KernelError(errno.ENOMEM)
        new = self.find_free(new_size)
        data = self.mem.read(old, old_size)
        self.mem.map(new, new_size, last.perms, last.name)
        self.mem.write(new, data)
        self.unmap(old, old_size)
        return new
