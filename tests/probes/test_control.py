"""Aggregate probes, enable/disable, KPROBE_FLAG_DISABLED, arm_all/disarm_all,
the blacklist, optimization and the probe list (kernel/kprobes.c)."""

from __future__ import annotations

import errno

import pytest

import guest
from emu import Machine
from probes import (
    KPROBE_FLAG_DISABLED,
    KPROBE_FLAG_OPTIMIZED,
    Kprobe,
    Kretprobe,
    ProbeError,
    add_blacklist,
    arm_all,
    disable_kprobe,
    disable_kretprobe,
    disarm_all,
    enable_kprobe,
    enable_kretprobe,
    list_probes,
    register_kprobe,
    register_kretprobe,
    set_optimization,
    stack_trace,
    unregister_kprobe,
)
from probes._cnative import NATIVE
from probes._core import get_manager
from tests.conftest import fib, return_now


def counting(log: list[str], name: str, ret: int = 0):
    def pre(kp, regs):
        log.append(name)
        return ret
    return pre


def armed(m: Machine, addr: int) -> bool:
    """Is the address served by a probe (planted int3 or code hook)?"""
    return "0000" in list_probes(m) and (m.mem.is_patched(addr) or any(
        line.endswith("[OPTIMIZED]") and int(line.split()[0], 16) == addr
        for line in list_probes(m).splitlines()))


# --- aggregates -----------------------------------------------------------------------
def test_aggregate_runs_pre_handlers_in_registration_order(machine: Machine) -> None:
    log: list[str] = []
    for name in "abc":
        register_kprobe(machine, Kprobe("open_file", pre_handler=counting(log, name)))
    machine.call("open_file", 1)
    assert log == ["a", "b", "c"]
    assert len({line.split()[0] for line in list_probes(machine).splitlines()}) == 1


def test_aggregate_nonzero_pre_handler_stops_the_chain() -> None:
    """aggr_pre_handler: a non-zero return ends the walk (and the single-step)."""
    m = guest.load("open_file")
    log: list[str] = []

    return_minus_5 = return_now(m, -5)

    def skip_call(kp, regs):
        log.append("stop")
        return return_minus_5(kp, regs)

    register_kprobe(m, Kprobe("open_file", pre_handler=counting(log, "first")))
    register_kprobe(m, Kprobe("open_file", pre_handler=skip_call))
    register_kprobe(m, Kprobe("open_file", pre_handler=counting(log, "never")))
    assert m.call("open_file", 1) == -5
    assert log == ["first", "stop"]


def test_kprobe_and_kretprobe_share_an_address(machine: Machine) -> None:
    log: list[str] = []
    register_kprobe(machine, Kprobe("fib", pre_handler=counting(log, "k")))
    register_kretprobe(machine, Kretprobe("fib", handler=lambda ri, r: log.append("r")))
    assert machine.call("fib", 1) == 1
    assert log == ["k", "r"]
    lines = list_probes(machine).splitlines()
    assert [line.split()[1] for line in lines] == ["k", "r"]


# --- enable / disable -----------------------------------------------------------------
def test_disable_one_child_keeps_the_others_and_the_int3(machine: Machine) -> None:
    log: list[str] = []
    a = Kprobe("open_file", pre_handler=counting(log, "a"))
    b = Kprobe("open_file", pre_handler=counting(log, "b"))
    register_kprobe(machine, a)
    register_kprobe(machine, b)
    addr = a.addr
    disable_kprobe(machine, a)
    assert a.flags & KPROBE_FLAG_DISABLED
    machine.call("open_file", 1)
    assert log == ["b"]
    assert armed(machine, addr)
    disable_kprobe(machine, b)
    assert not armed(machine, addr)
    machine.call("open_file", 1)
    assert log == ["b"]
    enable_kprobe(machine, a)
    machine.call("open_file", 1)
    assert log == ["b", "a"]


def test_enable_disable_of_an_unregistered_probe_is_einval(machine: Machine) -> None:
    for fn in (enable_kprobe, disable_kprobe):
        with pytest.raises(ProbeError) as info:
            fn(machine, Kprobe("fib"))
        assert info.value.errno == errno.EINVAL
    for fn in (enable_kretprobe, disable_kretprobe):
        with pytest.raises(ProbeError) as info:
            fn(machine, Kretprobe("fib"))
        assert info.value.errno == errno.EINVAL


def test_flag_disabled_registers_disarmed(machine: Machine) -> None:
    log: list[str] = []
    kp = Kprobe("open_file", pre_handler=counting(log, "x"), flags=KPROBE_FLAG_DISABLED)
    register_kprobe(machine, kp)
    machine.call("open_loop", 5)
    assert log == [] and not machine.mem.is_patched(kp.addr)
    assert list_probes(machine).split()[-1] == "[DISABLED]"
    enable_kprobe(machine, kp)
    machine.call("open_loop", 5)
    assert log == ["x"] * 5


def test_disable_kretprobe_stops_new_calls(machine: Machine) -> None:
    returns: list[int] = []
    rp = Kretprobe("open_file", handler=lambda ri, r: returns.append(1))
    register_kretprobe(machine, rp)
    disable_kretprobe(machine, rp)
    machine.call("open_loop", 5)
    assert returns == []
    enable_kretprobe(machine, rp)
    machine.call("open_loop", 5)
    assert len(returns) == 5


# --- the global switch ------------------------------------------------------------------
def test_disarm_all_and_arm_all_keep_per_probe_flags(machine: Machine) -> None:
    log: list[str] = []
    a = Kprobe("open_file", pre_handler=counting(log, "a"))
    b = Kprobe("fib", pre_handler=counting(log, "b"))
    register_kprobe(machine, a)
    register_kprobe(machine, b)
    disable_kprobe(machine, b)
    disarm_all(machine)
    late = Kprobe("open_loop", pre_handler=counting(log, "late"))
    register_kprobe(machine, late)            # registered while disarmed: stays disarmed
    machine.call("open_loop", 3)
    machine.call("fib", 3)
    assert log == []
    assert not any(machine.mem.is_patched(p.addr) for p in (a, b, late))
    arm_all(machine)
    machine.call("open_loop", 3)
    machine.call("fib", 3)
    assert log == ["late", "a", "a", "a"]     # b is still individually disabled


# --- blacklist ----------------------------------------------------------------------------
def test_trampoline_and_slots_are_blacklisted(machine: Machine) -> None:
    register_kretprobe(machine, Kretprobe("fib"))
    with pytest.raises(ProbeError, match="blacklist") as info:
        register_kprobe(machine, Kprobe("__kretprobe_trampoline"))
    assert info.value.errno == errno.EINVAL
    kp = Kprobe("fib", offset=1)               # mov rbp, rsp: runs out of line
    register_kprobe(machine, kp)
    slot_page = next(r for r in machine.mem.regions if r.name == "[kprobe_insn_slots]")
    with pytest.raises(ProbeError) as info:
        register_kprobe(machine, Kprobe(addr=slot_page.start))
    assert info.value.errno == errno.EINVAL


def test_add_blacklist_refuses_probes_in_the_range(machine: Machine) -> None:
    sym = machine.symbols.get_symbol("ackermann")
    add_blacklist(machine, sym.addr, sym.end)
    with pytest.raises(ProbeError, match="ackermann") as info:
        register_kprobe(machine, Kprobe("ackermann", offset=1))
    assert info.value.errno == errno.EINVAL
    with pytest.raises(ProbeError):
        register_kretprobe(machine, Kretprobe("ackermann"))
    register_kprobe(machine, Kprobe("fib"))   # elsewhere is fine


# --- optimization ---------------------------------------------------------------------------
def test_optimized_probes_patch_nothing_and_say_so() -> None:
    m = guest.load("fib")
    set_optimization(m, True)
    hits: list[str] = []
    kp = Kprobe("fib", pre_handler=counting(hits, "k"))
    with_post = Kprobe("fib", offset=4, post_handler=lambda *a: hits.append("post"))
    register_kprobe(m, kp)
    register_kprobe(m, with_post)
    assert kp.flags & KPROBE_FLAG_OPTIMIZED and not m.mem.is_patched(kp.addr)
    assert not with_post.flags & KPROBE_FLAG_OPTIMIZED and m.mem.is_patched(with_post.addr)
    assert m.call("fib", 5) == fib(5)
    assert hits.count("k") == hits.count("post") == 2 * fib(6) - 1
    set_optimization(m, False)
    assert not kp.flags & KPROBE_FLAG_OPTIMIZED and m.mem.is_patched(kp.addr)
    assert m.call("fib", 5) == fib(5)
    assert hits.count("k") == 2 * (2 * fib(6) - 1)


def test_optimized_pre_handler_can_redirect() -> None:
    m = guest.load("open_file")
    set_optimization(m, True)

    register_kprobe(m, Kprobe("open_file", pre_handler=return_now(m, -7)))
    assert m.call("open_file", 1) == -7
    assert m.call("open_loop", 10) == 10


def test_optimization_is_capped_and_freed_slots_are_reused() -> None:
    """Past max_optimized sites, probes stay int3 (Unicorn's code-hook dispatch is
    linear). A freed place goes to a waiting probe: the first one (Python paths) or
    the first to prove hot (the native core's adaptive optimizer)."""
    m = Machine.from_asm(guest.many_functions(40))
    set_optimization(m, True)
    cap = get_manager(m).max_optimized
    hits: list[str] = []
    kps = [Kprobe(f"f{i}", pre_handler=counting(hits, f"f{i}")) for i in range(cap + 8)]
    for kp in kps:
        register_kprobe(m, kp)
    optimized = [kp for kp in kps if kp.flags & KPROBE_FLAG_OPTIMIZED]
    assert optimized == kps[:cap]
    assert all(m.mem.is_patched(kp.addr) for kp in kps[cap:])
    assert [m.call(f"f{i}") for i in range(len(kps))] == list(range(len(kps)))
    assert hits == [f"f{i}" for i in range(len(kps))]
    unregister_kprobe(m, kps[0])
    waiting = kps[-1]
    if NATIVE is None:
        assert kps[cap].flags & KPROBE_FLAG_OPTIMIZED
        assert not m.mem.is_patched(kps[cap].addr)
        return
    from probes._core import PROMOTE_AFTER
    assert not kps[cap].flags & KPROBE_FLAG_OPTIMIZED
    for _ in range(PROMOTE_AFTER):
        m.call(f"f{len(kps) - 1}")
    assert waiting.flags & KPROBE_FLAG_OPTIMIZED and not m.mem.is_patched(waiting.addr)
    assert not kps[cap].flags & KPROBE_FLAG_OPTIMIZED


@pytest.mark.skipif(NATIVE is None, reason="the adaptive optimizer is the native core's")
def test_idle_hooks_go_back_to_int3_and_hot_sites_take_their_place() -> None:
    """Every hooked site costs every hooked hit (Unicorn walks all code hooks):
    after TIDY_EVERY hooked hits the idle ones are int3 again; a hot int3 site
    takes the place of a colder hooked one."""
    from probes._core import PROMOTE_AFTER, TIDY_EVERY

    m = Machine.from_asm(guest.many_functions(40))
    set_optimization(m, True)
    mgr = get_manager(m)
    kps = [Kprobe(f"f{i}", pre_handler=lambda kp, regs: 0) for i in range(30)]
    for kp in kps:
        register_kprobe(m, kp)
    assert len(mgr.hooked) == mgr.max_optimized
    for _ in range(TIDY_EVERY + 1):
        m.call("f0")
    assert len(mgr.hooked) == 1 and kps[0].flags & KPROBE_FLAG_OPTIMIZED
    assert all(m.mem.is_patched(kp.addr) for kp in kps[1:])
    for _ in range(PROMOTE_AFTER):           # a waiting site gets hot: a free place
        m.call("f29")
    assert kps[29].flags & KPROBE_FLAG_OPTIMIZED and len(mgr.hooked) == 2
    assert [m.call(f"f{i}") for i in range(30)] == list(range(30))


# --- the probe list ---------------------------------------------------------------------------
def test_list_probes_format() -> None:
    m = guest.load("fib")
    register_kretprobe(m, Kretprobe("fib"))
    register_kprobe(m, Kprobe("fib", offset=4, flags=KPROBE_FLAG_DISABLED))
    register_kprobe(m, Kprobe("fib"))
    base = m.symbols["fib"]
    assert list_probes(m) == (
        f"{base:016x}  r  fib+0x0  nmissed=0 nunwound=0\n"
        f"{base:016x}  k  fib+0x0\n"
        f"{base + 4:016x}  k  fib+0x4  [DISABLED]\n")
    set_optimization(m, True)
    assert list_probes(m).splitlines()[0] == f"{base:016x}  r  fib+0x0  [OPTIMIZED]  nmissed=0 nunwound=0"


# --- stack traces from a kprobe ---------------------------------------------------------------
def test_stack_trace_at_entry_and_inside_a_function(machine: Machine) -> None:
    traces: list[list[str]] = []

    def pre(kp, regs):
        if regs.rdi == (1 if kp.addr == machine.symbols["is_odd"] else 0):
            traces.append([machine.symbolize(a) for a in stack_trace(machine, regs)])
        return 0

    inner = machine.symbols["is_even"] + 4               # after push rbp; mov rbp, rsp
    register_kprobe(machine, Kprobe("is_odd", pre_handler=pre))
    register_kprobe(machine, Kprobe(addr=inner, pre_handler=pre))
    register_kretprobe(machine, Kretprobe("is_even"))    # hijacked frames in the chain
    assert machine.call("is_even", 2) == 1
    at_entry, inside = traces
    assert at_entry[0] == "is_odd+0x0"
    assert inside[0] == "is_even+0x4"
    assert all(frame.split("+")[0] in ("is_even", "is_odd") for frame in at_entry + inside)
    assert len(at_entry) == 2 and len(inside) == 3       # no trampoline, no exit address


# --- reentrancy -------------------------------------------------------------------------------------
def test_probe_hit_inside_a_handler_is_missed_not_run(machine: Machine) -> None:
    entries: list[int] = []
    rp = Kretprobe("fib", entry_handler=lambda ri, r: entries.append(1), maxactive=64)
    register_kretprobe(machine, rp)

    def calls_fib(kp, regs):
        assert machine.call("fib", 3) == fib(3)          # 5 nested hits on fib
        return 0

    register_kprobe(machine, Kprobe("open_file", pre_handler=calls_fib))
    assert machine.call("open_file", 1) == 4
    assert entries == [] and rp.kp.nmissed == 2 * fib(4) - 1
    unregister_kprobe(machine, rp.kp)


def test_a_pre_handler_disabling_a_later_sibling_stops_it_at_once(machine: Machine) -> None:
    """aggr_pre_handler checks each child's disabled flag as it walks."""
    log: list[str] = []
    second = Kprobe("open_file", pre_handler=counting(log, "second"))

    def first(kp, regs):
        log.append("first")
        disable_kprobe(machine, second)
        return 0

    register_kprobe(machine, Kprobe("open_file", pre_handler=first))
    register_kprobe(machine, second)
    machine.call("open_file", 1)
    assert log == ["first"]


def test_a_handler_that_changes_how_its_own_site_is_served() -> None:
    """From inside an optimized hit: adding a post_handler probe on the same address
    switches the site to int3; the current execution runs its handlers once, the
    next ones run both probes."""
    m = guest.load("open_file")
    set_optimization(m, True)
    log: list[str] = []
    later = Kprobe("open_file", post_handler=lambda kp, r, f: log.append("post"))

    def first(kp, regs):
        log.append("pre")
        if not later.registered:
            register_kprobe(m, later)
        return 0

    kp = Kprobe("open_file", pre_handler=first)
    register_kprobe(m, kp)
    assert kp.flags & KPROBE_FLAG_OPTIMIZED
    assert m.call("open_loop", 3) == 0
    assert not kp.flags & KPROBE_FLAG_OPTIMIZED
    assert log == ["pre", "pre", "post", "pre", "post"]


def test_an_optimized_probe_with_no_handler_costs_nothing() -> None:
    """A site with nothing to run at a hit gets no code hook at all (issue 12);
    a probe with a handler joining it gets one, and fires."""
    import guest
    from probes import Kprobe, register_kprobe, set_optimization, unregister_kprobe

    m = guest.load("fib")
    set_optimization(m, True)
    addr = m.symbols["fib"]
    bare = Kprobe("fib")
    register_kprobe(m, bare)
    assert bare.flags & KPROBE_FLAG_OPTIMIZED and addr not in m._code_hooks.values()
    assert m.call("fib", 10) == 55
    hits: list[int] = []
    busy = Kprobe("fib", pre_handler=lambda kp, regs: hits.append(regs.rip) and 0)
    register_kprobe(m, busy)
    assert addr in m._code_hooks.values()
    assert m.call("fib", 10) == 55 and len(hits) == 177
    unregister_kprobe(m, busy)
    assert addr not in m._code_hooks.values() and m.call("fib", 10) == 55
