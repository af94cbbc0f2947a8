"""Symbol tables: name -> address, and address -> ``name+0xOFF``.

Names are the objects' own (link-time, so C++ names are mangled: ``_Z6middlel``);
what is printed is demangled (``middle(long)+0x4``). A name resolves as written,
and also:
- ``OBJECT:SYMBOL`` with any name of a mapped object (:meth:`SymbolTable.add_object_names`:
  its base name, full path, soname or short name, ``libc:malloc`` as bpftrace
  takes it); the executable's own names lead to its unprefixed symbols;
- a demangled C++ name (``middle(long)``, or ``middle`` without the parameters)
  when exactly one address has it.

Demangling is libstdc++'s ``__cxa_demangle`` (the one ``c++filt`` and gdb use),
through ctypes; without libstdc++ on the host names stay mangled.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

__all__ = ["Symbol", "SymbolTable", "demangle", "split_object", "without_parameters"]

@dataclass(frozen=True)
class Symbol:
    name: str
    addr: int
    size: int

    @property
    def end(self) -> int:
        return self.addr + self.size

    @property
    def demangled(self) -> str:
        """The name as people read it (see :func:`demangle`)."""
        return demangle(self.name)


class SymbolTable(Mapping[str, int]):
    """A read-only mapping of symbol names to addresses, with reverse lookup."""

    def __init__(self) -> None:
        self._by_name: dict[str, Symbol] = {}
        self._sorted: list[Symbol] = []
        self._addrs: list[int] = []
        self._prefixes: dict[str, str] = {}      # object name -> its symbols' prefix
        # demangled name (and without parameters) -> its symbol; None: ambiguous
        self._demangled: dict[str, Symbol | None] | None = None
        self._cxx = False                        # some name is a mangled C++ one

    def add(self, name: str, addr: int, size: int) -> None:
        sym = Symbol(name, addr, size)
        self._by_name.setdefault(name, sym)
        i = bisect.bisect_right(self._addrs, addr)
        self._sorted.insert(i, sym)
        self._addrs.insert(i, addr)
        self._demangled = None
        self._cxx = self._cxx or name.startswith("_Z")

    def add_many(self, symbols: Iterable[tuple[str, int, int]]) -> None:
        """Add ``(name, addr, size)`` triples: one sort, not one insertion each.

        Same rules as :meth:`add`: the first symbol of a name wins name lookups,
        and at one address older symbols sort before newer ones.
        """
        new = [Symbol(name, addr, size) for name, addr, size in symbols]
        for sym in new:
            self._by_name.setdefault(sym.name, sym)
        self._sorted = sorted(self._sorted + new, key=lambda sym: sym.addr)
        self._addrs = [sym.addr for sym in self._sorted]
        self._demangled = None
        self._cxx = self._cxx or any("_Z" in sym.name for sym in new)

    def add_object_names(self, names: Iterable[str], prefix: str) -> None:
        """Let ``NAME:SYMBOL`` mean ``prefix + SYMBOL`` for each of ``names`` (an
        object's names; ``prefix`` is ``"libc.so.6:"``, or ``""`` for the
        executable). A name already taken keeps its first object."""
        for name in names:
            if name:
                self._prefixes.setdefault(name, prefix)

    def __getitem__(self, name: str) -> int:
        sym = self.get_symbol(name)
        if sym is None:
            raise KeyError(name)
        return sym.addr

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get_symbol(name) is not None

    def get_symbol(self, name: str) -> Symbol | None:
        """The symbol ``name`` names: as written, by another name of its object,
        or demangled (see the module's docstring)."""
        sym = self._by_name.get(name)
        if sym is not None:
            return sym
        obj, rest = split_object(name)
        if obj is not None:
            prefix = self._prefixes.get(obj)
            if prefix is None:
                return None
            name = prefix + rest
            sym = self._by_name.get(name)
            if sym is not None:
                return sym
        if not self._cxx:
            return None
        return self._demangled_index().get(name)

    def lookup(self, addr: int) -> Symbol | None:
        """The symbol whose ``[addr, addr + size)`` holds ``addr``, if any."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        while i >= 0:
            sym = self._sorted[i]
            if sym.addr <= addr < sym.end or (sym.size == 0 and sym.addr == addr):
                return sym
            if sym.addr < addr and sym.size:
                return None
            i -= 1
        return None

    def symbolize(self, addr: int) -> str:
        """``name+0xOFF`` with the name demangled, or the address in hex."""
        sym = self.lookup(addr)
        if sym is None:
            return f"{addr:#x}"
        return f"{sym.demangled}+{addr - sym.addr:#x}"

    def _demangled_index(self) -> dict[str, Symbol | None]:
        if self._demangled is None:
            index: dict[str, Symbol | None] = {}
            for sym in self._by_name.values():
                if "_Z" not in sym.name:
                    continue
                full = sym.demangled
                if full == sym.name:
                    continue
                for key in {full, without_parameters(full)}:
                    other = index.get(key, sym)
                    index[key] = sym if other is not None and other.addr == sym.addr else None
            self._demangled = index
        return self._demangled


def split_object(name: str) -> tuple[str | None, str]:
    """``"libc:malloc"`` -> ``("libc", "malloc")``; a name without an object
    (``"main"``, ``"ns::f()"``: a ``::`` does not separate) -> ``(None, name)``."""
    i = 0
    while True:
        i = name.find(":", i)
        if i < 0:
            return None, name
        if name.startswith("::", i):
            i += 2
            continue
        return (name[:i], name[i + 1:]) if i else (None, name)


def without_parameters(name: str) -> str:
    """``ns::f(int) const`` -> ``ns::f``: the name up to its outermost parameter list."""
    depth = 0
    for i in range(len(name) - 1, -1, -1):
        c = name[i]
        if c == ")":
            depth += 1
        elif c == "(":
            depth -= 1
            if depth == 0:
                return name[:i]
    return name


def demangle(name: str) -> str:
    """The Itanium C++ ABI name ``name`` demangled (``_Z6middlel`` -> ``middle(long)``);
    an ``OBJECT:`` prefix is kept. Any other name, or every name when the host has
    no libstdc++, comes back unchanged."""
    if "_Z" not in name:
        return name
    obj, rest = split_object(name)
    if obj is not None:
        return f"{obj}:{_demangle(rest)}"
    return _demangle(name)


@functools.lru_cache(maxsize=1 << 16)
def _demangle(name: str) -> str:
    if not name.startswith("_Z"):
        return name
    cxa = _cxa_demangle()
    return cxa(name) if cxa is not None else name


@functools.cache
def _cxa_demangle() -> Callable[[str], str] | None:
    """``abi::__cxa_demangle`` of the host's libstdc++, or None."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6")
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = lib.__cxa_demangle
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    free = libc.free
    free.argtypes = [ctypes.c_void_p]
    free.restype = None

    def cxa(name: str) -> str:
        status = ctypes.c_int(0)
        out = fn(name.encode("utf-8", "surrogateescape"), None, None, ctypes.byref(status))
        if status.value != 0 or not out:     # -2: not a valid mangled name
            return name
        try:
            return ctypes.string_at(out).decode("utf-8", "surrogateescape")
        finally:
            free(out)
    return cxa
