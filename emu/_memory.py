"""Guest memory backed by host buffers (``uc_mem_map_ptr``).

Every region is an anonymous ``mmap`` handed to Unicorn, so the host reads and
writes guest memory through a ``memoryview`` at the cost of a slice, with no
call into the engine. Two rules follow from bypassing the engine:

- a host write into a region that may hold translated code must drop the
  translation cache for the written range (:meth:`Memory.write` does);
- a byte patched into code (a breakpoint) is recorded with its original value in
  a shadow table; :meth:`Memory.read` shows the original, and a write over a
  patched byte updates the shadow and keeps the patch.

Host memory follows what the guest touches, not what it maps: each region is a
``MAP_NORESERVE`` anonymous mapping (no page is allocated before it is touched),
:meth:`Memory.discard` gives pages back to the host (``MADV_DONTNEED``) and
:meth:`Memory.move` moves a range by re-pointing Unicorn at the same host pages
(``mremap`` copies nothing). The total mapped is bounded by :attr:`Memory.limit`
(``Machine(mem_limit=...)``): a mapping past it is refused.
"""

from __future__ import annotations

import bisect
import ctypes
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from unicorn import UC_PROT_EXEC, UC_PROT_READ, UC_PROT_WRITE, Uc

from ._errors import EmuError

__all__ = ["Memory", "Region", "PAGE", "PROT_R", "PROT_W", "PROT_X", "PROT_RW",
           "PROT_RX", "PROT_RWX", "DEFAULT_MEM_LIMIT"]

PAGE = 0x1000
PROT_R, PROT_W, PROT_X = UC_PROT_READ, UC_PROT_WRITE, UC_PROT_EXEC
PROT_RW = PROT_R | PROT_W
PROT_RX = PROT_R | PROT_X
PROT_RWX = PROT_R | PROT_W | PROT_X

_U64 = struct.Struct("<Q")
_LOWEST = 0x10000                 # never map below (null-page guard)
_HIGHEST = 0x7FFF_FFFF_F000       # canonical user-space top
DEFAULT_MEM_LIMIT = 4 << 30       # Machine(mem_limit=...): bytes mapped in the guest
_MAP_NORESERVE = 0x4000           # Linux; the mmap module does not export it
_MADV_DONTNEED = 4
_ZERO_CHUNK = 1 << 20             # zero-filling fallback of discard(), per write
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.restype = ctypes.c_int
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_libc.mincore.restype = ctypes.c_int
_COPY_CHUNK = 1 << 24             # copy_from: bytes of residency looked up per mincore


def _copy_resident(src: Region, dst: Region, lo: int, n: int) -> int:
    """Copy the resident pages of ``src[lo:lo+n]`` to ``dst`` (the same offsets);
    all of them when the host cannot say which are resident."""
    pages = (n + PAGE - 1) // PAGE
    vec = (ctypes.c_ubyte * pages)()
    if _libc.mincore(src.ptr + lo, n, vec) != 0:        # pragma: no cover - not Linux
        dst.view[lo:lo + n] = src.view[lo:lo + n]
        return n
    copied = 0
    i = 0
    while i < pages:
        if not vec[i] & 1:
            i += 1
            continue
        j = i
        while j < pages and vec[j] & 1:
            j += 1
        a, b = lo + i * PAGE, min(lo + j * PAGE, lo + n)
        dst.view[a:b] = src.view[a:b]
        copied += b - a
        i = j
    return copied


def page_down(addr: int) -> int:
    return addr & ~(PAGE - 1)


def page_up(addr: int) -> int:
    return (addr + PAGE - 1) & ~(PAGE - 1)


@dataclass(eq=False)
class Region:
    """One mapping: ``[start, end)`` backed by ``buf``."""

    start: int
    end: int
    perms: int
    name: str
    # The host buffer, ``buf[0]`` at ``start``: the mmap itself, or a slice of
    # it once the region was split (:meth:`Memory.unmap_range`, :meth:`Memory.protect`).
    buf: mmap.mmap | memoryview = field(repr=False)
    view: memoryview = field(repr=False)
    ptr: int = field(default=0, repr=False)     # host address of buf[0]

    @property
    def size(self) -> int:
        return self.end - self.start


class Memory:
    """The guest address space of one engine."""

    def __init__(self, uc: Uc, limit: int = DEFAULT_MEM_LIMIT) -> None:
        if limit <= 0:
            raise ValueError(f"mem_limit must be a positive number of bytes, got {limit}")
        self._uc = uc
        self.limit = limit
        self.mapped = 0                        # bytes in every region (<= limit)
        # Bytes the other address spaces sharing this one's limit hold (the other
        # processes of a run, emu.linux), or None: the limit is this one's alone.
        self.others: Callable[[], int] | None = None
        self._regions: list[Region] = []       # sorted by start
        self._starts: list[int] = []
        self._last: Region | None = None
        self._shadow: dict[int, int] = {}      # patched address -> original byte
        self._patched: list[int] = []          # sorted keys of _shadow
        self._patch_value: dict[int, int] = {}  # patched address -> planted byte
        # Called with (start, end) of each region about to be unmapped, while it
        # is still mapped: clients forget what they planted there (breakpoints).
        self.on_unmap: list[Callable[[int, int], None]] = []
        # Called with (start, end) after pages of it changed permissions.
        self.on_protect: list[Callable[[int, int], None]] = []

    # --- mapping -------------------------------------------------------------
    def map(self, start: int, size: int, perms: int = PROT_RW, name: str = "") -> Region:
        """Map ``size`` bytes at ``start`` (both page-aligned), zero-filled."""
        if start % PAGE or size <= 0 or size % PAGE:
            raise EmuError(f"bad mapping {start:#x}+{size:#x}: start and size must be page-aligned")
        if self.overlaps(start, start + size):
            raise EmuError(f"mapping {start:#x}-{start + size:#x} ({name}) overlaps an existing one")
        if not self.fits(size):
            others = self.others() if self.others else 0
            raise EmuError(f"mapping {size} bytes ({name or 'anonymous'}) at {start:#x} would put "
                           f"{self.mapped + size} bytes in the guest (its other processes: {others} "
                           f"more), over mem_limit ({self.limit} bytes)")
        try:
            buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE)
        except OSError as exc:
            raise EmuError(f"the host refused {size:#x} bytes for {start:#x} ({name}): "
                           f"{exc.strerror}") from None
        ptr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        self._uc.mem_map_ptr(start, size, perms, ptr)
        region = Region(start, start + size, perms, name, buf, memoryview(buf), ptr)
        self._insert(region)
        self.mapped += size
        return region

    def fits(self, size: int, freed: int = 0) -> bool:
        """Whether ``size`` more bytes (``freed`` fewer elsewhere) stay within :attr:`limit`
        (with what the other address spaces of the run hold, :attr:`others`)."""
        others = self.others() if self.others is not None else 0
        return self.mapped + others - freed + size <= self.limit

    def _insert(self, region: Region) -> None:
        i = bisect.bisect_left(self._starts, region.start)
        self._regions.insert(i, region)
        self._starts.insert(i, region.start)

    def map_anywhere(self, size: int, perms: int = PROT_RW, name: str = "",
                     near: int | None = None, reach: int = 1 << 31) -> Region:
        """Map ``size`` bytes in a free gap, within ``reach`` of ``near`` if given."""
        size = page_up(size)
        start = self.find_gap(size, near, reach)
        if start is None:
            where = f" within {reach:#x} of {near:#x}" if near is not None else ""
            raise EmuError(f"no free gap of {size:#x} bytes{where}")
        return self.map(start, size, perms, name)

    def find_gap(self, size: int, near: int | None = None, reach: int = 1 << 31) -> int | None:
        lo, hi = _LOWEST, _HIGHEST
        if near is not None:
            lo, hi = max(lo, page_up(near - reach + PAGE)), min(hi, page_down(near + reach - PAGE))
        gaps: list[tuple[int, int]] = []
        cursor = lo
        for r in self._regions:
            if r.start > cursor:
                gaps.append((cursor, min(r.start, hi)))
            cursor = max(cursor, r.end)
        gaps.append((cursor, hi))
        best: int | None = None
        for a, b in gaps:
            if b - a < size:
                continue
            # Closest placement to `near`: right after the region below it, or
            # right before the region above it.
            cand = a if near is None or near <= a else max(a, min(b - size, page_down(near)))
            if near is None:
                return cand
            if best is None or abs(cand - near) < abs(best - near):
                best = cand
        return best

    def unmap(self, region: Region) -> None:
        for fn in self.on_unmap:
            fn(region.start, region.end)
        self._uc.mem_unmap(region.start, region.size)
        self._remove(region)
        self.mapped -= region.size
        # Whoever still holds the region (a task's stack) holds no host memory.
        region.buf = region.view = memoryview(b"")
        region.ptr = 0

    def _remove(self, region: Region) -> None:
        i = self._regions.index(region)
        del self._regions[i]
        del self._starts[i]
        if self._last is region:
            self._last = None

    def unmap_range(self, start: int, end: int) -> None:
        """Unmap every page of ``[start, end)``, splitting regions at the edges.

        Patched bytes in the range are forgotten (their memory is gone).
        """
        for r in self._split_range(start, end):
            self.invalidate_code(r.start, r.end)
            self._forget_patches(r.start, r.end)
            self.unmap(r)

    def move(self, start: int, end: int, new: int) -> None:
        """Move the pages of ``[start, end)`` to ``new`` (``mremap``): Unicorn maps the
        same host pages at the new address, so no byte is copied or touched.

        The caller checks that the destination is free. For clients the old range
        is unmapped (:attr:`on_unmap`); patched bytes in it get their original
        values back and are forgotten (the code moved away from its breakpoints).
        """
        regions = self._split_range(start, end)
        for r in regions:
            for fn in self.on_unmap:
                fn(r.start, r.end)
        self._restore_patches(start, end)
        self.invalidate_code(start, end)
        for r in regions:
            self._uc.mem_unmap(r.start, r.size)
            self._remove(r)
        for r in regions:
            lo = r.start - start + new
            self._uc.mem_map_ptr(lo, r.size, r.perms, r.ptr)
            self._insert(Region(lo, lo + r.size, r.perms, r.name, r.buf, r.view, r.ptr))

    def discard(self, start: int, end: int) -> None:
        """Give the pages of ``[start, end)`` back to the host; they read as zeros
        (``MADV_DONTNEED`` on private anonymous memory). Patches stay, over zeros."""
        for r in self.regions_in(start, end):
            lo, hi = max(r.start, start), min(r.end, end)
            if _libc.madvise(r.ptr + lo - r.start, hi - lo, _MADV_DONTNEED) != 0:
                for a in range(lo, hi, _ZERO_CHUNK):            # pragma: no cover
                    n = min(_ZERO_CHUNK, hi - a)
                    r.view[a - r.start:a - r.start + n] = bytes(n)
        first = bisect.bisect_left(self._patched, start)
        last = bisect.bisect_left(self._patched, end)
        for a in self._patched[first:last]:
            self._shadow[a] = 0
            at = self.region_at(a)
            assert at is not None
            at.view[a - at.start] = self._patch_value[a]
        self.invalidate_code(start, end)

    def copy_from(self, other: Memory, skip: Callable[[Region], bool] = lambda r: False) -> int:
        """Map every region of ``other`` (but those ``skip`` names) here, with the
        same contents but for its patches (this copy shows the original bytes):
        ``fork``'s copy of an address space. Only the pages ``other`` has touched
        are copied (``mincore``: resident pages), so a big mapping the guest never
        wrote costs nothing here either. Returns the bytes copied.
        """
        copied = 0
        for r in other.regions:
            if skip(r):
                continue
            mine = self.map(r.start, r.size, r.perms, r.name)
            for lo in range(0, r.size, _COPY_CHUNK):
                n = min(_COPY_CHUNK, r.size - lo)
                copied += _copy_resident(r, mine, lo, n)
        for a in other._patched:
            mine_r = self.region_at(a)
            if mine_r is not None and not skip(mine_r):
                mine_r.view[a - mine_r.start] = other._shadow[a]
        return copied

    def span(self, addr: int, size: int, perms: int = 0) -> int:
        """How many of the ``size`` bytes from ``addr`` are mapped without a hole
        (with at least ``perms``): how far a copy to or from the guest can go."""
        n = 0
        while n < size:
            r = self.region_at(addr + n)
            if r is None or r.perms & perms != perms:
                break
            n = min(size, r.end - addr)
        return n

    def protect(self, start: int, end: int, perms: int) -> None:
        """Set ``perms`` on the mapped pages of ``[start, end)`` (``mprotect``)."""
        for r in self._split_range(start, end):
            self._uc.mem_protect(r.start, r.size, perms)
            r.perms = perms
        for fn in self.on_protect:
            fn(start, end)

    def regions_in(self, start: int, end: int) -> list[Region]:
        """The regions overlapping ``[start, end)``, in address order."""
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        out = []
        for r in self._regions[i:]:
            if r.start >= end:
                break
            if r.end > start:
                out.append(r)
        return out

    def _split_range(self, start: int, end: int) -> list[Region]:
        if start % PAGE or end % PAGE:
            raise EmuError(f"range {start:#x}-{end:#x} is not page-aligned")
        self._split_at(start)
        self._split_at(end)
        return self.regions_in(start, end)

    def _split_at(self, addr: int) -> None:
        """Make ``addr`` a region boundary. Unicorn sees the two halves as two
        host-pointer mappings of the same buffer, so no byte moves."""
        r = self.region_at(addr)
        if r is None or r.start == addr:
            return
        self._uc.mem_unmap(r.start, r.size)
        i = self._regions.index(r)
        halves = []
        for lo, hi in ((r.start, addr), (addr, r.end)):
            view = r.view[lo - r.start:hi - r.start]
            ptr = r.ptr + lo - r.start
            self._uc.mem_map_ptr(lo, hi - lo, r.perms, ptr)
            halves.append(Region(lo, hi, r.perms, r.name, view, view, ptr))
        self._regions[i:i + 1] = halves
        self._starts[i:i + 1] = [h.start for h in halves]
        self._last = None

    def _restore_patches(self, start: int, end: int) -> None:
        """Put the original bytes back under the patches of ``[start, end)`` and forget them."""
        first = bisect.bisect_left(self._patched, start)
        last = bisect.bisect_left(self._patched, end)
        for a in self._patched[first:last]:
            r = self.region_at(a)
            assert r is not None
            r.view[a - r.start] = self._shadow[a]
        self._forget_patches(start, end)

    def _forget_patches(self, start: int, end: int) -> None:
        lo = bisect.bisect_left(self._patched, start)
        hi = bisect.bisect_left(self._patched, end)
        for a in self._patched[lo:hi]:
            del self._shadow[a]
            del self._patch_value[a]
        del self._patched[lo:hi]

    def has_patches(self, start: int, end: int) -> bool:
        """Whether a byte of ``[start, end)`` is patched (reads show its original)."""
        i = bisect.bisect_left(self._patched, start)
        return i < len(self._patched) and self._patched[i] < end

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self._starts, end) - 1
        return i >= 0 and self._regions[i].end > start

    @property
    def regions(self) -> tuple[Region, ...]:
        return tuple(self._regions)

    def region_at(self, addr: int) -> Region | None:
        last = self._last
        if last is not None and last.start <= addr < last.end:
            return last
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self._regions[i].end:
            self._last = self._regions[i]
            return self._last
        return None

    # --- access --------------------------------------------------------------
    def _chunks(self, addr: int, size: int):
        while size > 0:
            r = self.region_at(addr)
            if r is None:
                raise EmuError(f"guest address {addr:#x} is not mapped")
            n = min(size, r.end - addr)
            yield r, addr - r.start, n
            addr += n
            size -= n

    def read(self, addr: int, size: int) -> bytes:
        """Guest bytes at ``addr``; patched bytes read as their originals."""
        if size < 0:
            raise EmuError(f"negative read size {size}")
        data = b"".join(bytes(r.view[off:off + n]) for r, off, n in self._chunks(addr, size))
        if self._patched:
            lo = bisect.bisect_left(self._patched, addr)
            hi = bisect.bisect_left(self._patched, addr + size)
            if lo < hi:
                out = bytearray(data)
                for a in self._patched[lo:hi]:
                    out[a - addr] = self._shadow[a]
                data = bytes(out)
        return data

    def write(self, addr: int, data: bytes) -> None:
        """Write guest bytes; keeps patches in place and drops stale translations."""
        data = bytes(data)
        pos = 0
        for r, off, n in list(self._chunks(addr, len(data))):
            r.view[off:off + n] = data[pos:pos + n]
            pos += n
        if self._patched:
            lo = bisect.bisect_left(self._patched, addr)
            hi = bisect.bisect_left(self._patched, addr + len(data))
            for a in self._patched[lo:hi]:
                self._shadow[a] = data[a - addr]
                r = self.region_at(a)
                assert r is not None
                r.view[a - r.start] = self._patch_value[a]
        self.invalidate_code(addr, addr + len(data))

    def invalidate_code(self, start: int, end: int) -> None:
        """Drop translated blocks overlapping ``[start, end)``."""
        if end > start:
            self._uc.ctl_remove_cache(start, end)

    def read_u64(self, addr: int) -> int:
        r = self._last
        if r is None or not (r.start <= addr <= r.end - 8):
            r = self.region_at(addr)
            if r is None or addr > r.end - 8:
                return int.from_bytes(self.read(addr, 8), "little")
        return _U64.unpack_from(r.buf, addr - r.start)[0]

    def write_u64(self, addr: int, value: int) -> None:
        """Write a data word (stack slot): no patch or translation bookkeeping."""
        r = self._last
        if r is None or not (r.start <= addr <= r.end - 8):
            r = self.region_at(addr)
            if r is None or addr > r.end - 8:
                raise EmuError(f"guest address {addr:#x} is not mapped for an 8-byte write")
        _U64.pack_into(r.buf, addr - r.start, value)

    # --- code patches (breakpoints) -------------------------------------------
    def patch_byte(self, addr: int, value: int) -> None:
        """Replace the byte at ``addr`` with ``value``, remembering the original."""
        r = self.region_at(addr)
        if r is None:
            raise EmuError(f"cannot patch unmapped address {addr:#x}")
        if addr not in self._shadow:
            self._shadow[addr] = r.view[addr - r.start]
            bisect.insort(self._patched, addr)
        self._patch_value[addr] = value
        r.view[addr - r.start] = value
        self.invalidate_code(addr, addr + 1)

    def unpatch_byte(self, addr: int) -> None:
        """Put the original byte back at ``addr``."""
        original = self._shadow.pop(addr)
        del self._patch_value[addr]
        self._patched.remove(addr)
        r = self.region_at(addr)
        assert r is not None
        r.view[addr - r.start] = original
        self.invalidate_code(addr, addr + 1)

    def is_patched(self, addr: int) -> bool:
        return addr in self._shadow
