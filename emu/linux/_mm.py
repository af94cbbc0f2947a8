"""The guest's address space: ``brk``, ``mmap`` and friends (``mm/mmap.c``, ``mm/mremap.c``).

Placement follows the kernel's top-down layout: ``mmap`` without a usable hint
takes the highest free gap below ``mmap_top`` (under the stack), the heap
grows up from the end of the executable's bss.

Only regions the guest owns (its image, stack, heap and its own mappings) can be
unmapped, remapped or re-protected by the guest; the emulator's own regions
(probe trampolines, out-of-line slots) are invisible to it: ``munmap`` and
``mprotect`` skip them and ``MAP_FIXED`` over them fails with ``ENOMEM``.

Everything mapped counts against ``Memory.limit`` (``Machine(mem_limit=...)``,
the kernel's ``may_expand_vm`` with one limit): ``mmap`` and ``mremap`` past it
fail with ``ENOMEM``, ``brk`` past it leaves the break where it was. Host memory
follows what the guest touches: ``mremap`` moves host pages without copying them.
"""

from __future__ import annotations

import errno

from .._errors import EmuError
from .._memory import PAGE, PROT_R, PROT_W, PROT_X, Memory, Region, page_up
from ._registry import KernelError

__all__ = ["AddressSpace", "ANON", "HEAP", "STACK", "MMAP_MIN_ADDR", "TASK_SIZE"]

ANON, HEAP, STACK = "[anon]", "[heap]", "[stack]"
_GUEST_NAMES = frozenset({ANON, HEAP, STACK})
MMAP_MIN_ADDR = 0x10000          # vm.mmap_min_addr
TASK_SIZE = 0x7FFF_FFFF_F000     # x86-64 TASK_SIZE_MAX: the top of user space (47 bits)
_LOWEST, _TASK_SIZE = MMAP_MIN_ADDR, TASK_SIZE


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
        """Map ``[start, start+size)``; with ``fixed``, replace the guest's mappings there.

        Raises:
            KernelError: ``ENOMEM``: not free (not ``fixed``), over an emulator
                region, or past the memory limit.
        """
        replaced = 0
        if fixed:
            regions = self.mem.regions_in(start, start + size)
            if any(not guest_owned(r) for r in regions):
                raise KernelError(errno.ENOMEM)
            replaced = sum(min(r.end, start + size) - max(r.start, start) for r in regions)
        elif not self.is_free(start, size):
            raise KernelError(errno.ENOMEM)
        if not self.mem.fits(size, replaced):
            raise KernelError(errno.ENOMEM)
        if fixed:
            self.mem.unmap_range(start, start + size)
        region = self._map(start, size, perms, name)
        self.mem.invalidate_code(start, start + size)
        return region

    def _map(self, start: int, size: int, perms: int, name: str) -> Region:
        try:
            return self.mem.map(start, size, perms, name)
        except EmuError:            # over the limit, or the host refused the pages
            raise KernelError(errno.ENOMEM) from None

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
            grow = new_end - old_end
            if not self.is_free(old_end, grow) or not self.mem.fits(grow):
                return self.brk             # brk fails quietly: the old break
            try:
                self.mem.map(old_end, grow, PROT_R | PROT_W, HEAP)
            except EmuError:
                return self.brk
        elif new_end < old_end:
            self.mem.unmap_range(new_end, old_end)
        self.brk = addr
        return addr

    def remap(self, old: int, old_size: int, new_size: int, may_move: bool) -> int:
        """``mremap`` of a private mapping: shrink, grow in place, or move (the host
        pages move with it: nothing is copied)."""
        old_size, new_size = page_up(old_size), page_up(new_size)
        if new_size > _TASK_SIZE or old_size > _TASK_SIZE:
            raise KernelError(errno.EINVAL)
        regions = self.mem.regions_in(old, old + old_size)
        covered = sum(min(r.end, old + old_size) - max(r.start, old) for r in regions)
        if covered != old_size or not old_size or not all(guest_owned(r) for r in regions):
            raise KernelError(errno.EFAULT)
        if new_size <= old_size:
            self.unmap(old + new_size, old_size - new_size)
            return old
        last, grow = regions[-1], new_size - old_size
        if not self.mem.fits(grow):
            raise KernelError(errno.ENOMEM)
        if self.is_free(old + old_size, grow):
            self._map(old + old_size, grow, last.perms, last.name)
            return old
        if not may_move:
            raise KernelError(errno.ENOMEM)
        new = self.find_free(new_size)
        self._map(new + old_size, grow, last.perms, last.name)
        self.mem.move(old, old + old_size, new)
        return new
