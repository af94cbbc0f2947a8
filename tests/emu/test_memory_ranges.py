"""Range operations of guest memory: the ``munmap``/``mprotect`` building blocks.

Rules pinned: unmapping or re-protecting part of a region splits it at page
boundaries and keeps every byte of the rest in place (the halves share the host
buffer); patched bytes in an unmapped range are forgotten; Unicorn agrees.
"""

from __future__ import annotations

import pytest
from unicorn import UcError

from emu import EmuError, Machine
from emu._memory import PROT_R, PROT_RW

BASE = 0x100000
PAGE = 0x1000


@pytest.fixture
def m() -> Machine:
    m = Machine()
    m.mem.map(BASE, 8 * PAGE, PROT_RW, "data")
    m.write(BASE, bytes(range(256)) * (8 * PAGE // 256))
    return m


def _spans(m: Machine) -> list[tuple[int, int, int]]:
    return [(r.start, r.end, r.perms) for r in m.mem.regions if r.name == "data"]


def test_unmap_middle_leaves_two_regions(m: Machine) -> None:
    m.mem.unmap_range(BASE + 2 * PAGE, BASE + 3 * PAGE)
    assert _spans(m) == [(BASE, BASE + 2 * PAGE, PROT_RW), (BASE + 3 * PAGE, BASE + 8 * PAGE, PROT_RW)]
    assert m.read(BASE + 3 * PAGE, 4) == bytes(range(4))
    assert m.mem.read_u64(BASE + 8 * PAGE - 8) == int.from_bytes(bytes(range(248, 256)), "little")
    with pytest.raises(UcError):
        m._uc.mem_read(BASE + 2 * PAGE, 1)
    assert bytes(m._uc.mem_read(BASE + 3 * PAGE, 2)) == b"\x00\x01"


def test_protect_part_of_a_region(m: Machine) -> None:
    m.mem.protect(BASE + PAGE, BASE + 2 * PAGE, PROT_R)
    assert _spans(m) == [(BASE, BASE + PAGE, PROT_RW), (BASE + PAGE, BASE + 2 * PAGE, PROT_R),
                         (BASE + 2 * PAGE, BASE + 8 * PAGE, PROT_RW)]
    m.write(BASE + PAGE, b"host writes ignore guest protection")
    assert m.read(BASE + PAGE, 4) == b"host"


def test_unmap_forgets_patches(m: Machine) -> None:
    m.mem.patch_byte(BASE + 5 * PAGE, 0xCC)
    m.mem.patch_byte(BASE + 1, 0xCC)
    m.mem.unmap_range(BASE + 4 * PAGE, BASE + 8 * PAGE)
    assert not m.mem.is_patched(BASE + 5 * PAGE)
    assert m.mem.is_patched(BASE + 1) and m.read(BASE + 1, 1) == b"\x01"


def test_ranges_must_be_page_aligned(m: Machine) -> None:
    with pytest.raises(EmuError, match="page-aligned"):
        m.mem.unmap_range(BASE + 1, BASE + PAGE)


def test_unmap_across_regions_and_gaps(m: Machine) -> None:
    m.mem.map(BASE + 10 * PAGE, 2 * PAGE, PROT_RW, "data")
    m.mem.unmap_range(BASE + 7 * PAGE, BASE + 11 * PAGE)
    assert _spans(m) == [(BASE, BASE + 7 * PAGE, PROT_RW), (BASE + 11 * PAGE, BASE + 12 * PAGE, PROT_RW)]
