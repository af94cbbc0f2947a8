"""Histograms and tables as bcc prints them (bcc/table.py ``print_log2_hist``,
tools/funccount.py, tools/stackcount.py, tools/argdist.py), so output pasted
from a bcc session and from ours reads the same."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["log2_slot", "format_log2_hist", "format_counts", "format_funccount",
           "format_stacks", "format_folded"]

STARS_MAX = 40


def log2_slot(value: int) -> int:
    """bcc's ``bpf_log2l`` (helpers.h): ``floor(log2(value)) + 1``, and 1 for 0, so
    0 and 1 share the ``0 -> 1`` row."""
    return value.bit_length() if value > 0 else 1


def _stars(val: int, val_max: int, width: int) -> str:
    n = min(width, int(width * val / val_max)) if val_max else 0
    text = "*" * n
    if val > val_max:
        text = text[:-1] + "+"
    return text


def format_log2_hist(slots: Mapping[int, int], val_type: str) -> str:
    """The log2 histogram of ``slots`` (slot -> count, slots from :func:`log2_slot`)."""
    idx_max = max((i for i, v in slots.items() if v > 0), default=-1)
    val_max = max(slots.values(), default=0)
    if idx_max <= 32:
        header, width, stars = f"     {val_type:<19} : count     distribution", 10, STARS_MAX
    else:
        header, width, stars = f"               {val_type:<29} : count     distribution", 20, STARS_MAX // 2
    if idx_max <= 0:
        return ""
    lines = [header]
    for i in range(1, idx_max + 1):
        low, high = (1 << i) >> 1, (1 << i) - 1
        if low == high:
            low -= 1
        val = slots.get(i, 0)
        bar = _stars(val, val_max, stars)
        lines.append(f"{low:{width}d} -> {high:<{width}d} : {val:<8d} |{bar:<{stars}}|")
    return "\n".join(lines) + "\n"


def format_counts(counts: Mapping[str, int], what: str) -> str:
    """argdist's ``-C`` table: ``COUNT EVENT`` lines, most frequent last."""
    lines = [f"\t{'COUNT':<10} {what}"]
    for value, n in sorted(counts.items(), key=lambda kv: (kv[1], kv[0])):
        lines.append(f"\t{n:<10d} {value}")
    return "\n".join(lines) + "\n"


def format_funccount(counts: Mapping[str, int]) -> str:
    """funccount's table: ``FUNC COUNT``, by count, then name."""
    lines = [f"{'FUNC':<36} {'COUNT':>8}"]
    lines += [f"{name:<36} {n:8d}" for name, n in sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))]
    return "\n".join(lines) + "\n"


def format_stacks(stacks: Mapping[tuple[str, ...], int]) -> str:
    """stackcount's default output: each stack innermost first, then its count."""
    out: list[str] = []
    for stack, n in sorted(stacks.items(), key=lambda kv: (kv[1], kv[0])):
        out.extend(f"  {frame}" for frame in stack)
        out.append(f"    {n}\n")
    return "\n".join(out) + ("\n" if out else "")


def format_folded(stacks: Iterable[tuple[tuple[str, ...], int]]) -> str:
    """``stackcount -f``: ``outer;mid;inner COUNT`` (flamegraph.pl, speedscope)."""
    return "".join(f"{';'.join(reversed(stack))} {n}\n" for stack, n in sorted(stacks))
