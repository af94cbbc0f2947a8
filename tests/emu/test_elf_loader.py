"""The ELF loader: errors, symbols, the initial stack, mapped objects.

Rules pinned: fs/binfmt_elf.c (create_elf_tables: argc, argv, envp, auxv, a
16-byte aligned rsp, AT_PHDR pointing at the loaded program headers) and issue #4
(one-line LoadError for bad files; .symtab symbols with sizes; shared-object
symbols named ``libc.so.6:malloc``; one notification per mapped object).
"""

from __future__ import annotations

import io
import shutil
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from emu import LoadError, Machine
from emu._elf import PIE_BASE
from emu._regtable import RIP, RSP

AT_PHDR, AT_PHNUM, AT_PAGESZ, AT_BASE, AT_ENTRY, AT_RANDOM, AT_EXECFN = 3, 5, 6, 7, 9, 25, 31


def _elf_symbol(path: Path, name: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        sym = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(name)[0]
        return sym["st_value"], sym["st_size"]


# --- loader errors ---------------------------------------------------------------------
def _load_error(path: Path) -> str:
    with pytest.raises(LoadError) as info:
        Machine.from_elf(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_truncated_file_is_a_load_error(guest_bin: Path, tmp_path: Path) -> None:
    """A file cut inside its headers or inside a segment: 'truncated', one line."""
    data = (guest_bin / "fib.static").read_bytes()
    for size in (40, 100, 5000):
        cut = tmp_path / f"cut{size}"
        cut.write_bytes(data[:size])
        assert "truncated" in _load_error(cut)


def test_32_bit_elf_is_a_load_error(tmp_path: Path) -> None:
    """ELFCLASS32: refused by name, not misparsed."""
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    ehdr = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0x8048000, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    path = tmp_path / "i386"
    path.write_bytes(ehdr + bytes(200))
    assert "32-bit" in _load_error(path)


def test_missing_interpreter_is_a_load_error(guest_bin: Path, tmp_path: Path) -> None:
    """PT_INTERP naming a file that does not exist: the interpreter's path is named."""
    data = (guest_bin / "fib.dyn").read_bytes()
    interp = b"/lib64/ld-linux-x86-64.so.2"
    assert interp in data
    path = tmp_path / "nointerp"
    path.write_bytes(data.replace(interp, b"/nonexistent/ld-x86-64.so", 1))
    message = _load_error(path)
    assert "/nonexistent/ld-x86-64.so" in message and "not found" in message


def test_non_elf_file_is_a_load_error(tmp_path: Path) -> None:
    """A shell script, an empty file, a missing file, a directory."""
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    assert "not an ELF file" in _load_error(script)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert "not an ELF file" in _load_error(empty)
    assert "cannot read" in _load_error(tmp_path / "missing")
    assert "cannot read" in _load_error(tmp_path)


def test_relocatable_object_is_a_load_error(guest_bin: Path, tmp_path: Path) -> None:
    """ET_REL (a .o file) cannot be run: need ET_EXEC or ET_DYN."""
    data = bytearray((guest_bin / "fib.static").read_bytes())
    struct.pack_into("<H", data, 16, 1)            # e_type = ET_REL
    path = tmp_path / "fib.o"
    path.write_bytes(bytes(data))
    assert "ET_REL" in _load_error(path)


# --- symbols -----------------------------------------------------------------------------
def test_symtab_symbols_with_sizes(guest_bin: Path) -> None:
    """ET_EXEC: symbols at their link addresses with their st_size."""
    path = guest_bin / "fib.static"
    m = Machine.from_elf(str(path))
    value, size = _elf_symbol(path, "fib")
    sym = m.symbols.get_symbol("fib")
    assert sym is not None and (sym.addr, sym.size) == (value, size) and size > 0
    assert m.symbolize(value + 3) == "fib+0x3"


def test_static_pie_symbols_are_relocated(guest_bin: Path) -> None:
    """ET_DYN without interpreter: loaded at PIE_BASE, symbols moved with it."""
    path = guest_bin / "fib.pie"
    m = Machine.from_elf(str(path))
    value, _size = _elf_symbol(path, "fib")
    assert m.symbols["fib"] == PIE_BASE + value


def test_stripped_binary_gets_eh_frame_functions(guest_bin: Path, tmp_path: Path) -> None:
    """A stripped binary: no names, but each .eh_frame FDE is a function sub_ADDR
    with its size (so probes by address and symbolize work); it runs the same."""
    if shutil.which("strip") is None:
        pytest.skip("strip (binutils) is not installed")
    import subprocess
    path = tmp_path / "fib.stripped"
    subprocess.run(["strip", "-o", str(path), str(guest_bin / "fib.static")], check=True)
    fib, size = _elf_symbol(guest_bin / "fib.static", "fib")
    m = Machine.from_elf(str(path), [str(path), "10"])
    assert "fib" not in m.symbols
    sym = m.symbols.get_symbol(f"sub_{fib:x}")
    assert sym is not None and (sym.addr, sym.size) == (fib, size)
    assert m.symbolize(fib + 4) == f"sub_{fib:x}+0x4"
    m.stdout = io.BytesIO()
    assert m.run() == 55
    assert m.stdout.getvalue() == b"fib(10) = 55\n"


def test_shared_object_symbols_are_named_by_object(guest_bin: Path) -> None:
    """uprobes PATH:SYMBOL convention: libc.so.6:malloc, and symbolize names it."""
    m = Machine.from_elf(str(guest_bin / "strings.dyn"))
    mapped = []
    m.on_object_mapped.append(mapped.append)
    m.stdout = io.BytesIO()
    m.run()
    assert [o.name for o in mapped] == ["libc.so.6"]
    libc = mapped[0]
    assert libc.kind == "lib" and libc.nsyms > 1000
    malloc = m.symbols["libc.so.6:malloc"]
    assert libc.start <= malloc < libc.end
    assert m.symbolize(malloc + 0x10) == "libc.so.6:malloc+0x10"
    assert "main" in m.symbols                     # the executable keeps plain names
    assert {o.kind for o in m.objects} == {"exe", "interp", "lib"}


def test_every_file_mapping_is_recorded(guest_bin: Path) -> None:
    """The interpreter's mmaps of libc.so.6 are in m.objects.mappings, with offsets."""
    m = Machine.from_elf(str(guest_bin / "fib.dyn"))
    m.stdout = io.BytesIO()
    m.run()
    libc = [fm for fm in m.objects.mappings if fm.path.endswith("libc.so.6")]
    assert len(libc) >= 3 and libc[0].offset == 0
    assert any(fm.perms & 4 for fm in libc)        # the text segment is executable


# --- the initial stack -----------------------------------------------------------------
def _auxv(m: Machine) -> tuple[list[bytes], list[bytes], dict[int, int]]:
    sp = m.cpu.gpr[RSP]
    argc = m.mem.read_u64(sp)
    words = [m.mem.read_u64(sp + 8 * i) for i in range(1, 400)]

    def string(addr: int) -> bytes:
        return m.read(addr, 256).split(b"\0")[0]

    argv = [string(a) for a in words[:argc]]
    assert words[argc] == 0
    rest = words[argc + 1:]
    envc = rest.index(0)
    envp = [string(a) for a in rest[:envc]]
    pairs = rest[envc + 1:]
    aux: dict[int, int] = {}
    for i in range(0, len(pairs), 2):
        if pairs[i] == 0:
            break
        aux[pairs[i]] = pairs[i + 1]
    return argv, envp, aux


def test_initial_stack_layout(guest_bin: Path) -> None:
    """create_elf_tables: argc, argv, envp, auxv; rsp 16-byte aligned; AT_* values."""
    path = guest_bin / "fib.static"
    m = Machine.from_elf(str(path), [str(path), "7", "x"], env={"K": "v", "A": "b c"})
    assert m.cpu.gpr[RSP] % 16 == 0
    argv, envp, aux = _auxv(m)
    assert argv == [str(path).encode(), b"7", b"x"]
    assert envp == [b"K=v", b"A=b c"]
    data = path.read_bytes()
    e_entry, e_phoff = struct.unpack_from("<QQ", data, 24)
    e_phnum = struct.unpack_from("<H", data, 56)[0]
    assert aux[AT_ENTRY] == e_entry == m.cpu.gpr[RIP]
    assert aux[AT_PAGESZ] == 4096 and aux[AT_BASE] == 0 and aux[AT_PHNUM] == e_phnum
    assert m.read(aux[AT_PHDR], 56 * e_phnum) == data[e_phoff:e_phoff + 56 * e_phnum]
    assert len(m.read(aux[AT_RANDOM], 16)) == 16
    assert m.read(aux[AT_EXECFN], 256).split(b"\0")[0] == str(path).encode()


def test_dynamic_program_starts_in_its_interpreter(guest_bin: Path) -> None:
    """PT_INTERP: rip at the interpreter's entry, AT_BASE its base, AT_ENTRY the program's."""
    m = Machine.from_elf(str(guest_bin / "fib.dyn"))
    _argv, _envp, aux = _auxv(m)
    interp = next(o for o in m.objects if o.kind == "interp")
    exe = next(o for o in m.objects if o.kind == "exe")
    assert aux[AT_BASE] == interp.base and interp.start <= m.cpu.gpr[RIP] < interp.end
    assert exe.base == PIE_BASE and aux[AT_ENTRY] == m.symbols["_start"]


def test_same_seed_same_randomness(guest_bin: Path) -> None:
    """getrandom and AT_RANDOM come from the seed: reproducible, and seed-dependent."""
    def random_line(seed: int) -> bytes:
        m = Machine.from_elf(str(guest_bin / "sysprobe"), ["sysprobe", "random"], seed=seed)
        m.stdout = io.BytesIO()
        assert m.run() == 0
        return m.stdout.getvalue()

    assert random_line(1) == random_line(1) != random_line(2)

