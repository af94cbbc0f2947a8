"""The kernel's number parsers, as the probe parser uses them (lib/kstrtox.c, lib/vsprintf.c).

Each returns ``None`` where the kernel returns an error, never raises, and
works in one pass over the text whatever its length (no bignum arithmetic past
64 bits, no ``int()`` on unbounded digit strings).
"""

from __future__ import annotations

__all__ = ["kstrtoull", "kstrtoll", "kstrtouint", "simple_strtoul"]

_U64 = (1 << 64) - 1
_DIGITS = {c: i for i, c in enumerate("0123456789abcdef")}


def _fixup_radix(s: str, base: int) -> tuple[str, int]:
    """``_parse_integer_fixup_radix``: base 0 picks 16 (``0x`` + hex digit), 8 (``0``) or 10."""
    if base == 0:
        if s[:1] == "0":
            base = 16 if s[1:2].lower() == "x" and s[2:3].lower() in _HEX else 8
        else:
            base = 10
    if base == 16 and s[:1] == "0" and s[1:2].lower() == "x":
        s = s[2:]
    return s, base


_HEX = set("0123456789abcdef")


def _parse_integer(s: str, base: int) -> tuple[int, int, bool]:
    """``_parse_integer``: (value mod 2**64, digits consumed, overflowed)."""
    value, n, overflow = 0, 0, False
    for ch in s:
        digit = _DIGITS.get(ch.lower())
        if digit is None or digit >= base:
            break
        value = value * base + digit
        if value > _U64:
            overflow, value = True, value & _U64
        n += 1
    return value, n, overflow


def _kstrtoull_raw(s: str, base: int) -> int | None:
    s, base = _fixup_radix(s, base)
    value, n, overflow = _parse_integer(s, base)
    if n == 0 or overflow:
        return None
    rest = s[n:]
    if rest in ("", "\n"):
        return value
    return None


def kstrtoull(s: str, base: int = 0) -> int | None:
    """``kstrtoull``: one optional ``+``, the digits, at most a trailing newline."""
    if s[:1] == "+":
        s = s[1:]
    return _kstrtoull_raw(s, base)


def kstrtoll(s: str, base: int = 0) -> int | None:
    """``kstrtoll``: a ``-`` or one ``+``, then as :func:`kstrtoull`, within s64."""
    if s[:1] == "-":
        value = _kstrtoull_raw(s[1:], base)
        if value is None or value > 1 << 63:
            return None
        return -value
    value = kstrtoull(s, base)
    if value is None or value >> 63:
        return None
    return value


def kstrtouint(s: str, base: int = 0) -> int | None:
    """``kstrtouint``: :func:`kstrtoull` within u32."""
    value = kstrtoull(s, base)
    return value if value is not None and value <= 0xFFFF_FFFF else None


def simple_strtoul(s: str, base: int = 0) -> tuple[int, int]:
    """``simple_strtoul``: (value mod 2**64, index just past the digits); no errors."""
    rest, base = _fixup_radix(s, base)
    value, n, _ = _parse_integer(rest, base)
    return value, len(s) - len(rest) + n
