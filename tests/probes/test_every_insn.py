"""A kprobe on every instruction of a function that uses every instruction class
(arch/x86/kernel/kprobes/core.c: out-of-line with fix-ups, emulation, boosting)."""

from __future__ import annotations

from collections import Counter

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

import guest
from emu import Machine
from probes import Kprobe, register_kprobe, set_optimization

FUNCS = ("zoo", "zoo_double", "zoo_pop8")
INPUTS = (0, 1, 2, 11, 12)


def instructions(m: Machine) -> list[int]:
    addrs = []
    for name in FUNCS:
        sym = m.symbols.get_symbol(name)
        addrs += [i.address for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(m.read(sym.addr, sym.size), sym.addr)]
    return addrs


def oracle() -> tuple[list[int], Counter[int]]:
    """Unprobed results, and how often each instruction ran (a Unicorn code hook)."""
    m = guest.load("zoo")
    executed: Counter[int] = Counter()
    for addr in instructions(m):
        m.hook_code(addr, lambda a: executed.update([a]))
    return [m.call("zoo", x) for x in INPUTS], executed


@pytest.mark.parametrize("mode", ["pre+post (int3, single-step)", "pre only (boosted)",
                                  "pre only (optimized)", "post only"])
def test_every_instruction_probed_gives_the_unprobed_result(mode: str) -> None:
    expected, executed = oracle()
    m = guest.load("zoo")
    set_optimization(m, "optimized" in mode)
    pre: Counter[int] = Counter()
    post: Counter[int] = Counter()
    rips: dict[int, set[int]] = {}

    def on_pre(kp, regs):
        pre[kp.addr] += 1
        assert regs.rip == kp.addr
        return 0

    def on_post(kp, regs, flags):
        post[kp.addr] += 1
        rips.setdefault(kp.addr, set()).add(regs.rip)

    addrs = instructions(m)
    for addr in addrs:
        register_kprobe(m, Kprobe(addr=addr,
                                  pre_handler=on_pre if "pre" in mode else None,
                                  post_handler=on_post if "post" in mode else None))
    assert [m.call("zoo", x) for x in INPUTS] == expected
    if "pre" in mode:
        assert pre == executed          # each instruction counted once per execution
    if "post" in mode:
        assert post == executed
        # post_handler sees the next instruction: fall-through or the branch target
        assert all(r != a for a, rs in rips.items() for r in rs)
    # Every instruction ran for some input, except the one jrcxz always skips.
    assert [a for a in addrs if not executed[a]] == [a for a in addrs if m.read(a, 3) == b"\x49\x81\xc4"]
    assert len(addrs) > 40
