"""Intel-syntax x86-64 assembly with Keystone, and the labels that become symbols.

Rule (issue #2): every label at the start of a line whose name does not start
with ``.`` is a symbol, and a symbol extends to the next symbol (the last one to
the end of the code). Labels starting with ``.`` are local to the symbol they
follow (as in NASM), so two functions may both use ``.done``; they are renamed
``symbol.done`` before assembly (Keystone cannot use a name starting with
``.`` inside a memory operand); refer to another symbol's local label by that
full name. Comments start with ``#``. Mnemonics Keystone does not know
(``endbr64``) are replaced by their bytes.

Keystone does not report label addresses, so one table of ``.quad label``
entries is appended to the source and read back from the tail of the output: a
single assembly pass gives every address.
"""

from __future__ import annotations

import re
import struct

from keystone import KS_ARCH_X86, KS_MODE_64, Ks, KsError

from ._errors import AsmError

__all__ = ["assemble", "Assembled"]

_LABEL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_$@]*)\s*:", re.MULTILINE)
_LOCAL_DEF = re.compile(r"^\s*(\.[A-Za-z_][A-Za-z0-9_]*)\s*:")
_LOCAL_REF = re.compile(r"(?<![\w.])(\.[A-Za-z_][A-Za-z0-9_]*)\b")
_ks = Ks(KS_ARCH_X86, KS_MODE_64)


class Assembled:
    def __init__(self, code: bytes, base: int, symbols: list[tuple[str, int, int]]) -> None:
        self.code = code
        self.base = base
        self.symbols = symbols      # (name, addr, size), sorted by addr


def _asm(source: str, base: int) -> bytes:
    try:
        encoding, _count = _ks.asm(source, base)
    except KsError as exc:
        raise AsmError(f"cannot assemble: {exc}") from None
    if encoding is None:
        raise AsmError("cannot assemble: the source produced no code")
    return bytes(encoding)


# Instructions Keystone 0.9 cannot assemble, as raw bytes.
_RAW_MNEMONICS = {
    "endbr64": ".byte 0xf3, 0x0f, 0x1e, 0xfa",
    "endbr32": ".byte 0xf3, 0x0f, 0x1e, 0xfb",
}
_RAW = re.compile(r"^(\s*)(" + "|".join(_RAW_MNEMONICS) + r")\s*$", re.MULTILINE)


def _scope_locals(source: str) -> str:
    """Rename each symbol's ``.local`` labels to ``symbol.local``."""
    lines = source.splitlines()
    chunks: list[tuple[str, list[str]]] = [("", [])]
    for line in lines:
        head = _LABEL.match(line)
        if head:
            chunks.append((head.group(1), []))
        chunks[-1][1].append(line)
    out: list[str] = []
    for owner, chunk in chunks:
        defined = {m.group(1) for m in map(_LOCAL_DEF.match, chunk) if m}
        if not defined or not owner:
            out.extend(chunk)
            continue
        def rename(match: re.Match[str], owner: str = owner, defined: set[str] = defined) -> str:
            name = match.group(1)
            return f"{owner}{name}" if name in defined else name
        out.extend(_LOCAL_REF.sub(rename, line.split("#", 1)[0]) for line in chunk)
    return "\n".join(out) + "\n"


def assemble(source: str, base: int) -> Assembled:
    labels: list[str] = []
    for name in _LABEL.findall(source):
        if name not in labels:
            labels.append(name)
    source = _RAW.sub(lambda mt: mt.group(1) + _RAW_MNEMONICS[mt.group(2)], _scope_locals(source))
    if not labels:
        return Assembled(_asm(source, base), base, [])
    table = "\n" + "\n".join(f".quad {name}" for name in labels) + "\n"
    blob = _asm(source + table, base)
    code, tail = blob[: -8 * len(labels)], blob[-8 * len(labels):]
    addrs = struct.unpack(f"<{len(labels)}Q", tail)
    end = base + len(code)
    ordered = sorted(zip(addrs, labels, strict=True))
    symbols = []
    for i, (addr, name) in enumerate(ordered):
        nxt = ordered[i + 1][0] if i + 1 < len(ordered) else end
        symbols.append((name, addr, nxt - addr))
    return Assembled(code, base, symbols)
