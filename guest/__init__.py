"""Guest programs: assembly sources for the tests, the demo and the benchmarks.

Each ``NAME.s`` holds Intel-syntax x86-64 functions (System V AMD64, frame
pointers). :func:`load` assembles one or more of them into a fresh machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["GUEST_DIR", "names", "source", "load", "many_functions"]

GUEST_DIR = Path(__file__).resolve().parent


def names() -> list[str]:
    """The bundled assembly programs."""
    return sorted(p.stem for p in GUEST_DIR.glob("*.s"))


def source(*program: str) -> str:
    """The source of one or more programs, concatenated."""
    parts = []
    for name in program:
        path = GUEST_DIR / f"{name}.s"
        if not path.is_file():
            raise FileNotFoundError(f"no guest program {name!r} (have: {', '.join(names())})")
        parts.append(path.read_text())
    return "\n".join(parts)


def many_functions(n: int) -> str:
    """Source of ``f0 .. f{n-1}``: small framed functions, ``f{i}()`` returns i
    (for tests and benchmarks that need many probe sites)."""
    return "\n".join(f"f{i}:\n    push rbp\n    mov rbp, rsp\n    mov eax, {i}\n    pop rbp\n    ret"
                     for i in range(n))


def load(*program: str, **machine_options: Any) -> Any:
    """A :class:`emu.Machine` with the given programs assembled at 0x400000."""
    from emu import Machine

    return Machine.from_asm(source(*program), **machine_options)
