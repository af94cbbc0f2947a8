"""Native tracing actions (probes.actions) and the sinks that use them
(probes.events.CountSink, Log2Sink): the same figures on every path (C without
the GIL, C with it, Python with KPE_NATIVE=0), and the invariants the C paths
keep (who owns an instance, the preemption countdown, the trap table)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from emu import Machine
from probes import (
    Kprobe,
    Kretprobe,
    register_kprobe,
    register_kretprobe,
    set_optimization,
    unregister_kretprobe,
)
from probes._cnative import NATIVE
from probes._core import get_manager
from probes.actions import Count, Latency
from probes.events import CountSink, Log2Sink, attach

SOURCE = """
leaf:
  push rbp
  mov rax, rdi
  add rax, 1
  pop rbp
  ret
loop:
  push rbx
  mov rbx, rdi
  xor eax, eax
again:
  mov rdi, rbx
  call leaf
  dec rbx
  jnz again
  pop rbx
  ret
fib:
  cmp rdi, 2
  jb fib_small
  push rbx
  push r12
  mov rbx, rdi
  lea rdi, [rbx - 1]
  call fib
  mov r12, rax
  lea rdi, [rbx - 2]
  call fib
  add rax, r12
  pop r12
  pop rbx
  ret
fib_small:
  mov rax, rdi
  ret
"""


def fib_calls(n: int) -> int:
    return 1 if n < 2 else 1 + fib_calls(n - 1) + fib_calls(n - 2)


@pytest.fixture
def m() -> Machine:
    return Machine.from_asm(SOURCE)


@pytest.mark.parametrize("optimized", [False, True])
def test_count_counts_every_hit(m: Machine, optimized: bool) -> None:
    set_optimization(m, optimized)
    c = Count()
    register_kprobe(m, Kprobe("leaf", pre_handler=c))
    assert m.call("loop", 500) == 2
    assert c.value == 500
    assert c(None, None) == 0 and c.value == 501       # an ordinary handler too


def test_count_next_to_a_python_handler_counts_the_same(m: Machine) -> None:
    c, seen = Count(), []
    register_kprobe(m, Kprobe("leaf", pre_handler=c))
    register_kprobe(m, Kprobe("leaf", pre_handler=lambda kp, regs: seen.append(regs.rdi)))
    assert m.call("loop", 30) == 2
    assert c.value == len(seen) == 30


def test_a_count_hit_inside_a_handler_is_missed_as_any(m: Machine) -> None:
    """kprobe_running(): a hit while a handler runs runs no handler (nmissed)."""
    c = Count()
    counted = Kprobe("leaf", pre_handler=c)
    register_kprobe(m, counted)

    def pre(kp: Kprobe, regs) -> int:  # type: ignore[no-untyped-def]
        m.call("leaf", 1)
        return 0
    register_kprobe(m, Kprobe("loop", pre_handler=pre))
    assert m.call("loop", 10) == 2
    assert (c.value, counted.nmissed) == (10, 1)


@pytest.mark.parametrize("optimized", [False, True])
def test_latency_times_every_call_with_its_own_entry(m: Machine, optimized: bool) -> None:
    set_optimization(m, optimized)
    lat = Latency(div=1)
    rp = Kretprobe("fib", entry_handler=lat.entry_handler, handler=lat.handler, data_size=8,
                   maxactive=64)
    register_kretprobe(m, rp)
    assert m.call("fib", 15) == 610
    assert lat.count == fib_calls(15) and rp.nmissed == 0
    assert sum(lat.hist.values()) == lat.count and lat.total >= 0 and lat.missed == 0


def test_latency_on_the_virtual_clock_counts_instructions() -> None:
    """Deterministic: a leaf call (n < 2) retires cmp, jb, mov and ret between its
    entry and its return: 4 ns of virtual time, slot bit_length(4) = 3."""
    def run() -> dict[int, int]:
        m = Machine.from_asm(SOURCE)
        m.exact_clock = True
        lat = Latency(now=m.now)
        register_kretprobe(m, Kretprobe("fib", entry_handler=lat.entry_handler,
                                        handler=lat.handler, data_size=8, maxactive=64))
        assert m.call("fib", 10) == 55
        assert lat.count == fib_calls(10)
        return dict(lat.hist)
    hist = run()
    assert hist[3] == (fib_calls(10) + 1) // 2 and min(hist) == 3
    assert run() == hist


@pytest.mark.parametrize("optimized", [False, True])
def test_latency_on_the_machines_virtual_clock_in_c_is_the_python_clocks(optimized: bool) -> None:
    """Latency("virtual") reads the hitting machine's clock at the hit (in C with
    the native core); Latency(now=m.now) calls it: the same histogram."""
    hists = []
    for now in ("virtual", None):
        m = Machine.from_asm(SOURCE)
        set_optimization(m, optimized)
        m.exact_clock = True
        lat = Latency(now if now else m.now)
        register_kretprobe(m, Kretprobe("fib", entry_handler=lat.entry_handler,
                                        handler=lat.handler, data_size=8, maxactive=64))
        assert m.call("fib", 9) == 34
        hists.append((dict(lat.hist), lat.count, lat.total))
    assert hists[0] == hists[1] and hists[0][1] == fib_calls(9)


def test_latency_without_room_for_its_stamp_misses(m: Machine) -> None:
    lat = Latency()
    register_kretprobe(m, Kretprobe("leaf", entry_handler=lat.entry_handler, handler=lat.handler))
    assert m.call("loop", 5) == 2
    assert (lat.count, lat.missed) == (0, 5)


def test_latency_refuses_a_bad_unit() -> None:
    with pytest.raises(ValueError):
        Latency(div=0)
    with pytest.raises(ValueError):
        Latency(now=3)
    with pytest.raises(ValueError):
        Latency(now="wall")


@pytest.mark.parametrize("optimized", [False, True])
def test_sinks_aggregate_in_c_with_the_figures_of_events(m: Machine, optimized: bool) -> None:
    set_optimization(m, optimized)
    count, lat = CountSink(), Log2Sink("d")
    h1 = attach(m, "p:t/c fib", count)
    h2 = attach(m, "r64:t/l fib d=$duration:u64", lat, clock="virtual")
    # The same lines with an extra argument build events: the Python path.
    ev_count, ev_lat = CountSink(), Log2Sink("d")
    attach(m, "p:t/c2 fib n=%di", ev_count)
    attach(m, "r64:t/l2 fib d=$duration:u64 r=$retval", ev_lat, clock="virtual")
    assert m.call("fib", 12) == 144
    assert count.value == ev_count.value == h1.hits == fib_calls(12)
    assert lat.count == ev_lat.count == h2.hits == fib_calls(12)
    assert lat.hist == ev_lat.hist and lat.total == ev_lat.total
    if NATIVE is not None:
        assert type(h1).__name__ == "_NativeHandle" and lat.actions and not ev_lat.actions


def test_a_stack_asking_line_keeps_the_event_path(m: Machine) -> None:
    sink = CountSink()
    attach(m, "p:t/c fib", sink, stack=True)
    assert m.call("fib", 5) == 5
    assert sink.value == fib_calls(5) and not sink.actions


def test_a_pre_handler_set_later_is_served(m: Machine) -> None:
    """A handler-less optimized site has no hook; giving its probe a handler
    serves it anew (it used to stay unhooked)."""
    set_optimization(m, True)
    kp = Kprobe("leaf")
    register_kprobe(m, kp)
    assert m.call("loop", 3) == 2
    c = Count()
    kp.pre_handler = c
    assert m.call("loop", 4) == 2
    assert c.value == 4


def test_re_registering_a_kretprobe_from_its_own_entry_handler(m: Machine) -> None:
    """The instance in hand belongs to the older registration: it is owned until
    its call returns, then dropped; the new registration's pool stays whole."""
    rets: list[int] = []
    rp = Kretprobe(addr=m.symbols["leaf"], handler=lambda ri, regs: rets.append(regs.rax),
                   maxactive=3)
    flips = {"n": 0}

    def entry(ri, regs) -> int:  # type: ignore[no-untyped-def]
        flips["n"] += 1
        if flips["n"] % 7 == 0:
            unregister_kretprobe(m, rp)
            register_kretprobe(m, rp)
        return 0
    rp.entry_handler = entry
    register_kretprobe(m, rp)
    for _ in range(5):
        assert m.call("loop", 40) == 2
    assert rp.nfree == rp.maxactive
    assert len(rets) < 200 and rets.count(2) >= 1


def test_a_trap_set_by_hand_replaces_the_native_one(m: Machine) -> None:
    c = Count()
    register_kprobe(m, Kprobe("leaf", pre_handler=c))
    assert m.call("loop", 2) == 2 and c.value == 2
    addr = m.symbols["leaf"]
    mgr = get_manager(m)
    seen: list[int] = []
    site_handler = m.traps[addr]

    def mine(a: int) -> None:
        seen.append(a)
        site_handler(a)
    m.traps[addr] = mine
    assert m.call("loop", 3) == 2
    assert seen == [addr] * 3 and c.value == 5
    assert mgr.sites[addr].handler is site_handler


_SCHEDULE = textwrap.dedent("""
    import json, sys
    from emu import Machine
    from probes import Kprobe, Kretprobe, register_kprobe, register_kretprobe
    from probes.actions import Count
    src = open(sys.argv[1]).read()
    m = Machine.from_asm(src)
    c = Count()
    register_kprobe(m, Kprobe("leaf", pre_handler=c))
    rp = Kretprobe("fib", maxactive=50)
    register_kretprobe(m, rp)
    order = []
    tasks = [m.spawn("loop", 40), m.spawn("fib", 9), m.spawn("loop", 25)]
    m.on_switch.append(lambda t: order.append(t.tid))
    m.run_tasks(seed=7, timeslice=50)
    print(json.dumps({"results": [t.result for t in tasks], "count": c.value,
                      "nmissed": rp.nmissed, "order": order}))
""")


def test_schedules_are_the_same_on_every_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Hits taken in C without the GIL are preemption points as any: a seeded run
    switches tasks at the same places with and without the native core."""
    src = tmp_path / "guest.s"
    src.write_text(SOURCE)
    runs = []
    for native in ("1", "0"):
        out = subprocess.run([sys.executable, "-c", _SCHEDULE, str(src)], capture_output=True,
                             text=True, check=True, env={**os.environ, "KPE_NATIVE": native})
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1]
    assert runs[0]["results"] == [2, 34, 2] and runs[0]["count"] == 65
    assert {2, 3, 4} <= set(runs[0]["order"]) and len(runs[0]["order"]) > 10
