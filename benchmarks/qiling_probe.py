"""The same return probe on Qiling (``hook_address`` on the entry and a
trampoline), the Unicorn framework users pick most. Optional: skipped with a
note when Qiling is not installed (``pip install qiling``)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import guest
from emu._asm import assemble

_TRAMPOLINE = 0x1000_0000
_EXIT = _TRAMPOLINE + 0x100


def available() -> str | None:
    """None when Qiling can be used, else why not."""
    try:
        import qiling  # noqa: F401
    except Exception as exc:          # ImportError, or a broken install
        return f"qiling is not installed ({type(exc).__name__}: {exc})"
    return None


def _instance(probed: bool) -> tuple[Any, int, int]:
    from qiling import Qiling
    from qiling.const import QL_ARCH, QL_OS, QL_VERBOSE

    out = assemble(guest.source("bench"), 0x400000)      # position-independent code
    offsets = {name: addr - out.base for name, addr, _ in out.symbols}
    ql = Qiling(code=out.code, archtype=QL_ARCH.X8664, ostype=QL_OS.LINUX,
                verbose=QL_VERBOSE.DISABLED)
    base = ql.loader.load_address
    ql.mem.map(_TRAMPOLINE, 0x1000)
    ql.mem.write(_TRAMPOLINE, b"\x90")
    ql.mem.write(_EXIT, b"\xf4")
    if probed:
        returns: list[int] = []

        def entry(ql: Any) -> None:
            sp = ql.arch.regs.rsp
            returns.append(ql.unpack64(ql.mem.read(sp, 8)))
            ql.mem.write(sp, ql.pack64(_TRAMPOLINE))

        def trampoline(ql: Any) -> None:
            ql.arch.regs.rip = returns.pop()

        ql.hook_address(entry, base + offsets["leaf"])
        ql.hook_address(trampoline, _TRAMPOLINE)
    return ql, base + offsets["leaf_loop"], base


def _run(ql: Any, start: int, n: int) -> float:
    sp = ((ql.arch.regs.rsp - 0x1000) & ~0xF) - 8
    ql.mem.write(sp, ql.pack64(_EXIT))
    ql.arch.regs.rsp = sp
    ql.arch.regs.rdi = n
    t = time.perf_counter()
    ql.emu_start(start, _EXIT)
    elapsed = time.perf_counter() - t
    expected = n * (n + 1) // 2 + n
    if ql.arch.regs.rax != expected:
        raise AssertionError(f"qiling run computed {ql.arch.regs.rax}, expected {expected}")
    return elapsed


def per_hit_us(n: int, reps: int) -> float:
    """Median overhead of one return-probe hit under Qiling, in microseconds."""
    bare, probed = [], []
    for _ in range(reps):
        for is_probed, sink in ((False, bare), (True, probed)):
            ql, start, _ = _instance(is_probed)
            _run(ql, start, 100)                          # translate once
            sink.append(_run(ql, start, n))
    return (statistics.median(probed) - statistics.median(bare)) / n * 1e6
