"""ELF64 headers: the file header and the program headers, checked.

Only what a loader needs (``fs/binfmt_elf.c``: ``load_elf_binary``,
``elf_check_arch``, ``load_elf_phdrs``). Every problem is one
:class:`~emu.LoadError` that names the file and what is wrong with it.
Symbols are read elsewhere (:mod:`emu._objects`, with pyelftools).

Only regular files of at most :data:`MAX_ELF_SIZE` bytes are read, and a file
without the ELF magic is not read further: a device (``/dev/zero``), a FIFO
(opened without waiting for a writer) or a huge file is refused at once.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

from ._errors import LoadError

__all__ = ["ElfFile", "Segment", "read_elf", "read_elf_bytes", "parse_elf", "MAX_ELF_SIZE",
           "ET_EXEC", "ET_DYN", "PT_LOAD", "PT_INTERP", "PT_PHDR", "PF_X", "PF_W", "PF_R"]

# e_ident, e_type, e_machine (elf.h names)
ELFMAG = b"\x7fELF"
EI_CLASS, EI_DATA = 4, 5
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB = 1
ET_EXEC, ET_DYN = 2, 3
EM_X86_64 = 62
# p_type, p_flags
PT_LOAD, PT_INTERP, PT_PHDR, PT_GNU_STACK = 1, 3, 6, 0x6474E551
PF_X, PF_W, PF_R = 1, 2, 4

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")   # Elf64_Ehdr, 64 bytes
_PHDR = struct.Struct("<IIQQQQQQ")           # Elf64_Phdr, 56 bytes
_ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
_CLASS_NAMES = {ELFCLASS32: "32-bit (ELFCLASS32)", ELFCLASS64: "64-bit"}
_MAX_PHNUM = 4096
MAX_ELF_SIZE = 1 << 30        # the largest executable, interpreter or library read
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_FILE_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


@dataclass(frozen=True)
class Segment:
    """One ``PT_LOAD`` program header."""

    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int


@dataclass(frozen=True)
class ElfFile:
    """The headers of one x86-64 ELF file, and its bytes.

    Attributes:
        e_type: ``ET_EXEC`` or ``ET_DYN``.
        entry: ``e_entry`` (unrelocated).
        phoff, phentsize, phnum: where the program headers are in the file.
        loads: the ``PT_LOAD`` segments, in file order.
        interp: the ``PT_INTERP`` path, or ``None``.
        phdr_vaddr: ``PT_PHDR``'s address, or the address at which the program
            headers are loaded (``AT_PHDR`` before relocation), or ``None``.
    """

    path: str
    data: bytes
    e_type: int
    entry: int
    phoff: int
    phentsize: int
    phnum: int
    loads: tuple[Segment, ...]
    interp: str | None
    phdr_vaddr: int | None

    @property
    def low(self) -> int:
        """Lowest page-aligned address of the image (unrelocated)."""
        return min(s.vaddr for s in self.loads) & ~0xFFF

    @property
    def high(self) -> int:
        """End of the image, exclusive (unrelocated, not page-aligned)."""
        return max(s.vaddr + s.memsz for s in self.loads)


def read_elf(path: str) -> ElfFile:
    """Read and check the ELF file at ``path``.

    Raises:
        LoadError: the file cannot be read, or is not a loadable x86-64 ELF.
    """
    return parse_elf(path, read_elf_bytes(path))


def read_elf_bytes(path: str, limit: int = MAX_ELF_SIZE) -> bytes:
    """The bytes of the ELF file at ``path``: a regular file of at most ``limit``
    bytes that starts with the ELF magic.

    Raises:
        LoadError: anything else, or the file cannot be read.
    """
    try:
        _check_regular(path, os.stat(path).st_mode)     # a device is not even opened
        fd = os.open(path, _OPEN_FLAGS)     # O_NONBLOCK: a FIFO does not wait for a writer
    except OSError as exc:
        raise LoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        _check_regular(path, st.st_mode)
        if st.st_size > limit:
            raise LoadError(f"{path}: {st.st_size} bytes is too big to load (the limit is {limit})")
        if os.pread(fd, len(ELFMAG), 0) != ELFMAG:
            raise LoadError(f"{path}: not an ELF file (no \\x7fELF magic)")
        chunks = []
        size = 0
        while size < st.st_size:
            chunk = os.pread(fd, st.st_size - size, size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise LoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _check_regular(path: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "a special file")
        raise LoadError(f"{path}: cannot read: not a regular file ({kind})")


def parse_elf(path: str, data: bytes) -> ElfFile:
    """Check the ELF image ``data`` (named ``path`` in errors) and describe it."""
    if data[:4] != ELFMAG:
        raise LoadError(f"{path}: not an ELF file (no \\x7fELF magic)")
    if len(data) < _EHDR.size:
        raise LoadError(f"{path}: truncated ELF file: {len(data)} bytes, "
                        f"the ELF header alone needs {_EHDR.size}")
    ident, e_type, machine, _ver, entry, phoff, _sh, _fl, _eh, phentsize, phnum = \
        _EHDR.unpack_from(data)[:11]
    if ident[EI_CLASS] != ELFCLASS64:
        what = _CLASS_NAMES.get(ident[EI_CLASS], f"unknown class {ident[EI_CLASS]}")
        raise LoadError(f"{path}: {what} ELF is not supported: only x86-64 (ELFCLASS64)")
    if ident[EI_DATA] != ELFDATA2LSB:
        raise LoadError(f"{path}: big-endian ELF is not supported: only x86-64")
    if machine != EM_X86_64:
        raise LoadError(f"{path}: ELF machine {machine} is not supported: only x86-64 (EM_X86_64)")
    if e_type not in (ET_EXEC, ET_DYN):
        name = _ET_NAMES.get(e_type, str(e_type))
        raise LoadError(f"{path}: ELF type {name} cannot be run: need ET_EXEC or ET_DYN")
    if phentsize != _PHDR.size or not 0 < phnum <= _MAX_PHNUM:
        raise LoadError(f"{path}: bad program header table (e_phentsize {phentsize}, e_phnum {phnum})")
    _need(path, data, phoff + phnum * phentsize, "the program header table")
    loads, interp, phdr = _program_headers(path, data, phoff, phnum)
    if not loads:
        raise LoadError(f"{path}: no PT_LOAD segment: nothing to load")
    return ElfFile(path, data, e_type, entry, phoff, phentsize, phnum, tuple(loads), interp,
                   phdr if phdr is not None else _phdr_in_load(loads, phoff, phnum))


def _program_headers(path: str, data: bytes, phoff: int,
                     phnum: int) -> tuple[list[Segment], str | None, int | None]:
    loads: list[Segment] = []
    interp: str | None = None
    phdr: int | None = None
    for i in range(phnum):
        p_type, flags, offset, vaddr, _pa, filesz, memsz, _align = \
            _PHDR.unpack_from(data, phoff + i * _PHDR.size)
        if p_type == PT_LOAD:
            _need(path, data, offset + filesz, f"PT_LOAD segment {len(loads)}")
            if memsz < filesz or (vaddr - offset) % 0x1000:
                raise LoadError(f"{path}: bad PT_LOAD segment {len(loads)} (vaddr {vaddr:#x}, "
                                f"offset {offset:#x}, filesz {filesz:#x}, memsz {memsz:#x})")
            loads.append(Segment(vaddr, offset, filesz, memsz, flags))
        elif p_type == PT_INTERP:
            _need(path, data, offset + filesz, "PT_INTERP")
            interp = data[offset:offset + filesz].split(b"\0", 1)[0].decode(errors="replace")
        elif p_type == PT_PHDR:
            phdr = vaddr
    return loads, interp, phdr


def _phdr_in_load(loads: list[Segment], phoff: int, phnum: int) -> int | None:
    """Address of the program headers when a PT_LOAD maps them (no PT_PHDR)."""
    for s in loads:
        if s.offset <= phoff and phoff + phnum * _PHDR.size <= s.offset + s.filesz:
            return s.vaddr + phoff - s.offset
    return None


def _need(path: str, data: bytes, end: int, what: str) -> None:
    if end > len(data):
        raise LoadError(f"{path}: truncated ELF file: {what} needs {end} bytes, "
                        f"the file has {len(data)}")
