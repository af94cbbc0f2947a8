"""Kretprobe semantics: entry_handler, ri.data, maxactive/nmissed, in-flight unregister."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import guest
from emu import Machine
from probes import (
    Kprobe,
    Kretprobe,
    register_kprobe,
    register_kretprobe,
    regs_get_kernel_argument,
    regs_return_value,
    set_optimization,
    unregister_kprobe,
    unregister_kretprobe,
)
from tests.conftest import fib

_DATA = struct.Struct("<qq")      # (argument n, sequence number)


def _fib_recorder(maxactive: int = 64):
    seen: list[tuple[int, int, int]] = []
    counter = [0]

    def entry(ri, regs):
        counter[0] += 1
        _DATA.pack_into(ri.data, 0, regs_get_kernel_argument(regs, 0), counter[0])
        return 0

    def ret(ri, regs):
        n, seq = _DATA.unpack_from(ri.data)
        seen.append((n, seq, regs_return_value(regs)))

    rp = Kretprobe("fib", handler=ret, entry_handler=entry, data_size=_DATA.size,
                   maxactive=maxactive)
    return rp, seen


@settings(max_examples=15, deadline=None)
@given(n=st.integers(min_value=0, max_value=20))
def test_each_return_sees_the_data_its_own_entry_stored(n: int) -> None:
    """Per-instance data under recursion: fib(n), every call's ri.data is its own."""
    m = guest.load("fib")
    rp, seen = _fib_recorder()
    register_kretprobe(m, rp)
    assert m.call("fib", n) == fib(n)
    calls = 2 * fib(n + 1) - 1        # calls made by the naive recursion
    assert len(seen) == calls
    assert all(value == fib(arg) for arg, _, value in seen)
    assert sorted(seq for _, seq, _ in seen) == list(range(1, calls + 1))
    assert rp.nmissed == 0


def test_data_buffer_is_exactly_data_size_and_writable(machine: Machine) -> None:
    """ri.data is a bytes-like object of exactly data_size bytes, preallocated."""
    sizes, buffers = [], set()

    def entry(ri, regs):
        sizes.append(len(ri.data))
        struct.pack_into("<Q", ri.data, 0, 0xFEEDFACE)
        buffers.add(id(ri.data))
        return 0

    rp = Kretprobe("open_file", entry_handler=entry, data_size=24, maxactive=3)
    register_kretprobe(machine, rp)
    machine.call("open_loop", 10)
    assert sizes == [24] * 10
    assert len(buffers) <= 3        # reused from the free list, never reallocated


def test_entry_handler_nonzero_skips_the_return_handler(machine: Machine) -> None:
    """A non-zero entry_handler return recycles the instance: no return handler."""
    returns: list[int] = []

    def entry(ri, regs):
        return regs.rdi % 2            # skip odd ids

    def ret(ri, regs):
        returns.append(ri.ret_addr)

    rp = Kretprobe("open_file", handler=ret, entry_handler=entry, maxactive=1)
    register_kretprobe(machine, rp)
    machine.call("open_loop", 20)
    assert len(returns) == 10
    assert rp.nmissed == 0             # skipping gave the one instance back each time


def test_no_free_instance_counts_nmissed_and_skips_entry_handler() -> None:
    """maxactive exhausted in deep recursion: exact nmissed, entry_handler not run."""
    m = guest.load("even_odd")
    entries, returns = [], []
    rp = Kretprobe("is_even", handler=lambda ri, r: returns.append(1),
                   entry_handler=lambda ri, r: entries.append(1), maxactive=5)
    register_kretprobe(m, rp)
    assert m.call("is_even", 40) == 1
    calls = 40 // 2 + 1               # is_even(40), is_even(38), ..., is_even(0), all nested
    assert rp.nmissed == calls - 5
    assert len(entries) == len(returns) == 5


def _model_fib_missed(n: int, maxactive: int) -> tuple[int, int]:
    """Reference model: (handled, missed) for fib(n) with a pool of maxactive."""
    free = [maxactive]
    handled = missed = 0

    def call(k: int) -> None:
        nonlocal handled, missed
        got = free[0] > 0
        if got:
            free[0] -= 1
        else:
            missed += 1
        if k >= 2:
            call(k - 1)
            call(k - 2)
        if got:
            free[0] += 1
            handled += 1
    call(n)
    return handled, missed


@pytest.mark.parametrize("maxactive", [1, 3, 7])
def test_fib_nmissed_matches_a_model_of_the_pool(maxactive: int) -> None:
    m = guest.load("fib")
    rp, seen = _fib_recorder(maxactive)
    register_kretprobe(m, rp)
    assert m.call("fib", 12) == fib(12)
    handled, missed = _model_fib_missed(12, maxactive)
    assert (len(seen), rp.nmissed) == (handled, missed)
    assert all(value == fib(arg) for arg, _, value in seen)


def test_maxactive_default_is_10(machine: Machine) -> None:
    rp = Kretprobe("fib")
    assert rp.maxactive == 0
    register_kretprobe(machine, rp)
    assert rp.maxactive == 10


def test_ret_addr_task_and_rp_of_an_instance(machine: Machine) -> None:
    """ri.ret_addr is the real return address; regs.rip equals it in the handler."""
    seen = []

    def ret(ri, regs):
        seen.append((ri.ret_addr, regs.rip, ri.task, ri.rp, machine.symbolize(ri.ret_addr)))

    rp = Kretprobe("open_file", handler=ret)
    register_kretprobe(machine, rp)
    machine.call("open_loop", 1)
    (ret_addr, rip, task, owner, where), = seen
    assert ret_addr == rip
    assert where.startswith("open_loop+")
    assert task is machine.current_task and task.tid > 0
    assert owner is rp


def test_return_value_override(machine: Machine) -> None:
    """Writing regs.rax in the return handler changes what the caller sees."""
    def ret(ri, regs):
        if regs_return_value(regs) < 0:
            regs.rax = 3

    register_kretprobe(machine, Kretprobe("open_file", handler=ret))
    assert machine.call("open_loop", 100) == 0
    assert machine.call("open_file", 3) == 3


def test_unregister_while_calls_are_in_flight() -> None:
    """Calls in flight at unregister return correctly and run no handler afterwards."""
    m = guest.load("fib")
    rp, seen = _fib_recorder()
    state = {"after": None}

    def pre(kp, regs):
        # The first time the recursion bottoms out, drop the kretprobe.
        if regs.rdi == 0 and state["after"] is None:
            unregister_kretprobe(m, rp)
            state["after"] = len(seen)
        return 0

    register_kretprobe(m, rp)
    kp = Kprobe("fib", pre_handler=pre)
    register_kprobe(m, kp)
    assert m.call("fib", 10) == fib(10)
    assert state["after"] is not None
    assert len(seen) == state["after"]       # no return handler ran after unregister
    assert not rp.registered
    unregister_kprobe(m, kp)
    assert m.call("fib", 10) == fib(10)      # and the machine is clean afterwards


def test_register_from_inside_a_handler_takes_effect(machine: Machine) -> None:
    returns = []
    rp = Kretprobe("open_file", handler=lambda ri, r: returns.append(regs_return_value(r)))

    def pre(kp, regs):
        if not rp.registered:
            register_kretprobe(machine, rp)
        return 0

    register_kprobe(machine, Kprobe("open_loop", pre_handler=pre))
    assert machine.call("open_loop", 10) == 2
    assert len(returns) == 10


def test_two_kretprobes_on_one_function_both_fire_innermost_first(machine: Machine) -> None:
    order: list[str] = []
    a = Kretprobe("fib", handler=lambda ri, r: order.append("a"),
                  entry_handler=lambda ri, r: order.append("A") and 0)
    b = Kretprobe("fib", handler=lambda ri, r: order.append("b"),
                  entry_handler=lambda ri, r: order.append("B") and 0)
    register_kretprobe(machine, a)
    register_kretprobe(machine, b)
    assert machine.call("fib", 1) == 1
    assert order == ["A", "B", "b", "a"]
    order.clear()
    assert machine.call("fib", 6) == fib(6)
    assert order.count("a") == order.count("b") == 2 * fib(7) - 1


def test_stale_instances_of_an_aborted_call_are_reclaimed(machine: Machine) -> None:
    """A call stopped by a handler exception leaves hijacked frames behind; the
    next calls reclaim their instances instead of leaking the pool."""
    rp, seen = _fib_recorder(maxactive=4)
    register_kretprobe(machine, rp)
    boom = Kprobe("fib", pre_handler=lambda kp, r: 1 / 0 if r.rdi == 0 else 0)
    register_kprobe(machine, boom)
    with pytest.raises(ZeroDivisionError):
        machine.call("fib", 6)
    unregister_kprobe(machine, boom)
    seen.clear()
    missed = rp.nmissed               # fib(6) is 7 deep: some misses in the aborted call
    assert machine.call("fib", 3) == fib(3)
    assert rp.nmissed == missed
    assert len(seen) == 2 * fib(4) - 1


def test_a_function_returning_with_ret_imm16_is_returned_from(probe_mode: str) -> None:
    """``ret 8`` (callee-pop) reaches the trampoline with rsp 8 bytes above the
    hijacked slot: its instance is still this frame's, its handler runs once."""
    plain = guest.load("zoo")
    expected = plain.call("zoo", 1)
    m = guest.load("zoo")
    set_optimization(m, probe_mode == "optimized")
    returns: list[int] = []
    rp = Kretprobe("zoo_pop8", handler=lambda ri, regs: returns.append(regs.rsp))
    register_kretprobe(m, rp)
    assert m.call("zoo", 1) == expected
    assert len(returns) == 1 and (rp.nmissed, rp.nunwound) == (0, 0)
    assert rp.nfree == rp.maxactive
