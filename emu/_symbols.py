"""Symbol tables: name -> address, and address -> ``name+0xOFF``."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

__all__ = ["Symbol", "SymbolTable"]


@dataclass(frozen=True)
class Symbol:
    name: str
    addr: int
    size: int

    @property
    def end(self) -> int:
        return self.addr + self.size


class SymbolTable(Mapping[str, int]):
    """A read-only mapping of symbol names to addresses, with reverse lookup."""

    def __init__(self) -> None:
        self._by_name: dict[str, Symbol] = {}
        self._sorted: list[Symbol] = []
        self._addrs: list[int] = []

    def add(self, name: str, addr: int, size: int) -> None:
        sym = Symbol(name, addr, size)
        self._by_name.setdefault(name, sym)
        i = bisect.bisect_right(self._addrs, addr)
        self._sorted.insert(i, sym)
        self._addrs.insert(i, addr)

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

    def __getitem__(self, name: str) -> int:
        return self._by_name[name].addr

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def get_symbol(self, name: str) -> Symbol | None:
        return self._by_name.get(name)

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
        sym = self.lookup(addr)
        if sym is None:
            return f"{addr:#x}"
        return f"{sym.name}+{addr - sym.addr:#x}"
