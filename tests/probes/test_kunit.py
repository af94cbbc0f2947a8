"""lib/tests/test_kprobes.c (KUnit), rewritten for this API.

Each test keeps the kernel's structure and expectations; ``target`` and
``target2`` are the guest functions ``kprobe_target`` (value / 3) and
``kprobe_target2`` (value / 3 + 1).
"""

from __future__ import annotations

import random

import pytest

import guest
from emu import Machine
from probes import (
    Kprobe,
    Kretprobe,
    register_kprobe,
    register_kprobes,
    register_kretprobe,
    register_kretprobes,
    regs_return_value,
    unregister_kprobe,
    unregister_kprobes,
    unregister_kretprobe,
    unregister_kretprobes,
)

DIV_FACTOR = 3


class KunitState:
    def __init__(self) -> None:
        self.rand1 = random.Random(2024).randrange(DIV_FACTOR + 1, 1 << 31)
        self.preh_val = 0
        self.posth_val = 0
        self.krph_val = 0
        self.errors: list[str] = []

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.errors.append(what)


@pytest.fixture
def st() -> KunitState:
    return KunitState()


@pytest.fixture
def m() -> Machine:
    return guest.load("kunit")


def make_kp(st: KunitState) -> Kprobe:
    def pre(p, regs):
        st.preh_val = st.rand1 // DIV_FACTOR
        return 0

    def post(p, regs, flags):
        st.expect(st.preh_val == st.rand1 // DIV_FACTOR, "kp post: preh_val")
        st.posth_val = st.preh_val + DIV_FACTOR

    return Kprobe(symbol_name="kprobe_target", pre_handler=pre, post_handler=post)


def make_kp2(st: KunitState) -> Kprobe:
    def pre(p, regs):
        st.preh_val = st.rand1 // DIV_FACTOR + 1
        return 0

    def post(p, regs, flags):
        st.expect(st.preh_val == st.rand1 // DIV_FACTOR + 1, "kp2 post: preh_val")
        st.posth_val = st.preh_val + DIV_FACTOR

    return Kprobe(symbol_name="kprobe_target2", pre_handler=pre, post_handler=post)


def entry_handler(st: KunitState):
    def handler(ri, regs):
        st.krph_val = st.rand1 // DIV_FACTOR
        return 0
    return handler


def make_rp(st: KunitState) -> Kretprobe:
    def return_handler(ri, regs):
        st.expect(regs_return_value(regs) == st.rand1 // DIV_FACTOR, "rp: return value")
        st.expect(st.krph_val != 0, "rp: entry handler ran first")
        st.krph_val = st.rand1
        return 0
    return Kretprobe(symbol_name="kprobe_target", handler=return_handler,
                     entry_handler=entry_handler(st))


def make_rp2(st: KunitState) -> Kretprobe:
    def return_handler2(ri, regs):
        st.expect(regs_return_value(regs) == st.rand1 // DIV_FACTOR + 1, "rp2: return value")
        st.expect(st.krph_val != 0, "rp2: entry handler ran first")
        st.krph_val = st.rand1
        return 0
    return Kretprobe(symbol_name="kprobe_target2", handler=return_handler2,
                     entry_handler=entry_handler(st))


def test_kprobe(m: Machine, st: KunitState) -> None:
    kp = make_kp(st)
    register_kprobe(m, kp)
    assert m.call("kprobe_target", st.rand1) == st.rand1 // DIV_FACTOR
    unregister_kprobe(m, kp)
    assert st.preh_val != 0
    assert st.posth_val != 0
    assert st.errors == []


def test_kprobes(m: Machine, st: KunitState) -> None:
    kp, kp2 = make_kp(st), make_kp2(st)
    # As in the kernel: addr and flags are cleared before reusing a kprobe.
    register_kprobe(m, kp)
    unregister_kprobe(m, kp)
    kp.addr = None
    kp.flags = 0
    register_kprobes(m, [kp, kp2])
    st.preh_val = st.posth_val = 0
    m.call("kprobe_target", st.rand1)
    assert st.preh_val != 0 and st.posth_val != 0
    st.preh_val = st.posth_val = 0
    m.call("kprobe_target2", st.rand1)
    assert st.preh_val != 0 and st.posth_val != 0
    unregister_kprobes(m, [kp, kp2])
    assert st.errors == []


def test_kretprobe(m: Machine, st: KunitState) -> None:
    rp = make_rp(st)
    register_kretprobe(m, rp)
    m.call("kprobe_target", st.rand1)
    unregister_kretprobe(m, rp)
    assert st.krph_val == st.rand1
    assert st.errors == []


def test_kretprobes(m: Machine, st: KunitState) -> None:
    rp, rp2 = make_rp(st), make_rp2(st)
    register_kretprobe(m, rp)
    unregister_kretprobe(m, rp)
    rp.kp.addr = None
    rp.kp.flags = 0
    register_kretprobes(m, [rp, rp2])
    st.krph_val = 0
    m.call("kprobe_target", st.rand1)
    assert st.krph_val == st.rand1
    st.krph_val = 0
    m.call("kprobe_target2", st.rand1)
    assert st.krph_val == st.rand1
    unregister_kretprobes(m, [rp, rp2])
    assert st.errors == []
