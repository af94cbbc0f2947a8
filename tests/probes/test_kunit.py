"""lib/tests/test_kprobes.c (KUnit), rewritten for this API.

Each test keeps the kernel's structure and expectations; ``target``,
``target2`` and ``recursed_target`` are the guest functions ``kprobe_target``
(value / 3), ``kprobe_target2`` (value / 3 + 1) and ``kprobe_recursed_target``.
As in the kernel, kp's handlers call ``recursed_target`` (here: ``m.call`` from
inside the handler), which is what test_kprobe_missed probes.
"""

from __future__ import annotations

import random

import pytest

from emu import Machine
from probes import (
    Kprobe,
    Kretprobe,
    register_kprobe,
    register_kprobes,
    register_kretprobe,
    register_kretprobes,
    regs_return_value,
    stack_trace,
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


def kp_handlers(m: Machine, st: KunitState):
    def kp_pre_handler(p, regs):
        st.preh_val = m.call("kprobe_recursed_target", st.rand1)
        return 0

    def kp_post_handler(p, regs, flags):
        expval = m.call("kprobe_recursed_target", st.rand1)
        st.expect(st.preh_val == expval, "kp post: preh_val")
        st.posth_val = st.preh_val + DIV_FACTOR

    return kp_pre_handler, kp_post_handler


def make_kp(m: Machine, st: KunitState, symbol: str = "kprobe_target") -> Kprobe:
    pre, post = kp_handlers(m, st)
    return Kprobe(symbol_name=symbol, pre_handler=pre, post_handler=post)


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
    kp = make_kp(m, st)
    register_kprobe(m, kp)
    assert m.call("kprobe_target", st.rand1) == st.rand1 // DIV_FACTOR
    unregister_kprobe(m, kp)
    assert st.preh_val != 0
    assert st.posth_val != 0
    assert st.errors == []


def test_kprobes(m: Machine, st: KunitState) -> None:
    kp, kp2 = make_kp(m, st), make_kp2(st)
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


def test_kprobe_missed(m: Machine, st: KunitState) -> None:
    """The handlers call the probed function: both nested hits are missed."""
    kp_missed = make_kp(m, st, "kprobe_recursed_target")
    register_kprobe(m, kp_missed)
    assert m.call("kprobe_recursed_target", st.rand1) == st.rand1 // DIV_FACTOR
    assert kp_missed.nmissed == 2
    assert st.preh_val != 0
    assert st.posth_val != 0
    unregister_kprobe(m, kp_missed)
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


# --- test_stacktrace_on_kretprobe / test_stacktrace_on_nested_kretprobe -------------------
def target_return_address(m: Machine) -> list[int]:
    base = m.symbols["target_return_address"]
    return [int.from_bytes(m.read(base + 8 * i, 8), "little") for i in range(2)]


def make_rp3(m: Machine, st: KunitState) -> Kretprobe:
    def stacktrace_return_handler(ri, regs):
        tra = target_return_address(m)
        st.expect(regs_return_value(regs) == tra[1], "rp3: return value")
        # The trace from the handler's regs starts at the target's return address.
        trace = stack_trace(m, regs)
        st.expect(len(trace) > 0, "rp3: empty trace")
        st.expect(trace[0] == tra[1], "rp3: trace starts at the return address")
        st.expect(m.exit_address not in trace, "rp3: trace stops at the outermost frame")
        return 0
    return Kretprobe(symbol_name="kprobe_stacktrace_target", handler=stacktrace_return_handler)


def make_rp4(m: Machine, st: KunitState) -> Kretprobe:
    def stacktrace_internal_return_handler(ri, regs):
        tra = target_return_address(m)
        st.expect(regs_return_value(regs) == tra[0], "rp4: return value")
        # The caller's frame was hijacked by rp3: the trace must show its real
        # return address, not the trampoline.
        trace = stack_trace(m, regs)
        st.expect(trace[:2] == tra, f"rp4: trace {[hex(a) for a in trace]} starts {tra}")
        st.expect(m.symbols["__kretprobe_trampoline"] not in trace, "rp4: trampoline in trace")
        return 0
    return Kretprobe(symbol_name="kprobe_stacktrace_internal_target",
                     handler=stacktrace_internal_return_handler)


def test_stacktrace_on_kretprobe(m: Machine, st: KunitState) -> None:
    myretaddr = m.exit_address
    rp3 = make_rp3(m, st)
    # Run the driver once to record the return addresses.
    assert m.call("kprobe_stacktrace_driver") == myretaddr
    register_kretprobe(m, rp3)
    assert m.call("kprobe_stacktrace_driver") == myretaddr
    unregister_kretprobe(m, rp3)
    assert st.errors == []


def test_stacktrace_on_nested_kretprobe(m: Machine, st: KunitState) -> None:
    myretaddr = m.exit_address
    rp3, rp4 = make_rp3(m, st), make_rp4(m, st)
    assert m.call("kprobe_stacktrace_driver") == myretaddr
    register_kretprobes(m, [rp3, rp4])
    assert m.call("kprobe_stacktrace_driver") == myretaddr
    unregister_kretprobes(m, [rp3, rp4])
    assert st.errors == []
