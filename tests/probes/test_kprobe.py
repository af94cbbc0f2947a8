"""Kprobe semantics: pre/post handlers, redirects, single-step, caching, invisibility."""

from __future__ import annotations

import pytest

import guest
from emu import Machine
from probes import (
    Kprobe,
    Kretprobe,
    register_kprobe,
    register_kretprobe,
    regs_get_kernel_argument,
    regs_return_value,
    unregister_kprobe,
)
from tests.conftest import fib, return_now


def insn_offset(m: Machine, func: str, text: str) -> int:
    """Address of the first instruction of ``func`` whose text is ``text``."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    sym = m.symbols.get_symbol(func)
    for insn in Cs(CS_ARCH_X86, CS_MODE_64).disasm(m.read(sym.addr, sym.size), sym.addr):
        if f"{insn.mnemonic} {insn.op_str}".strip() == text:
            return insn.address
    raise AssertionError(f"no '{text}' in {func}")


def test_pre_handler_sees_rip_at_the_probe_and_post_sees_the_step(machine: Machine) -> None:
    """pre_handler: regs.rip == kp.addr; post_handler: registers after the instruction."""
    addr = insn_offset(machine, "fib", "mov rbx, rdi")
    seen = []

    def pre(kp, regs):
        seen.append(("pre", regs.rip, regs.rbx == regs.rdi))
        return 0

    def post(kp, regs, flags):
        seen.append(("post", regs.rip, regs.rbx == regs.rdi))

    kp = Kprobe(addr=addr, pre_handler=pre, post_handler=post)
    register_kprobe(machine, kp)
    assert kp.addr == addr
    assert machine.call("fib", 7) == fib(7)
    assert {s[1] for s in seen if s[0] == "pre"} == {addr}
    assert all(s[2] for s in seen if s[0] == "post")
    assert [s[0] for s in seen[:2]] == ["pre", "post"]
    assert {s[1] for s in seen if s[0] == "post"} == {addr + 3}
    assert len(seen) == 2 * (2 * fib(8) - 1)


def test_symbol_offset_resolves_to_the_address(machine: Machine) -> None:
    kp = Kprobe(symbol_name="fib", offset=4)
    register_kprobe(machine, kp)
    assert kp.addr == machine.symbols["fib"] + 4


def test_pre_handler_nonzero_resumes_where_it_moved_rip(machine: Machine) -> None:
    """A non-zero pre_handler return skips the single-step and the post_handler.

    The handler emulates an immediate return with -1 (bpf_override_return style)."""
    posts = []
    register_kprobe(machine, Kprobe("open_file", pre_handler=return_now(machine, -1),
                                    post_handler=lambda *a: posts.append(1)))
    assert machine.call("open_file", 1) == -1
    assert machine.call("open_loop", 10) == 10
    assert posts == []


def test_handler_register_writes_apply_when_it_returns(machine: Machine) -> None:
    readback = []

    def pre(kp, regs):
        regs.rdi = 3                    # an id that fails with -ENOENT
        readback.append(regs.rdi)      # the handler reads back its own write
        return 0

    register_kprobe(machine, Kprobe("open_file", pre_handler=pre))
    assert machine.call("open_loop", 10) == 10
    assert readback == [3] * 10


def test_probe_after_the_code_was_cached_takes_effect(machine: Machine) -> None:
    """Unicorn caches translated blocks: arming and disarming must drop them."""
    hits = []
    assert machine.call("open_loop", 10) == 2           # translated and cached
    kp = Kprobe("open_file", offset=4, pre_handler=lambda kp, r: hits.append(1))
    register_kprobe(machine, kp)
    assert machine.call("open_loop", 10) == 2
    assert len(hits) == 10
    unregister_kprobe(machine, kp)
    assert machine.call("open_loop", 10) == 2
    assert len(hits) == 10


def test_read_shows_the_original_bytes_not_int3() -> None:
    machine = guest.load("fib")
    start = machine.symbols["fib"]
    before = machine.read(start, 16)
    register_kprobe(machine, Kprobe("fib"))
    inner = insn_offset(machine, "fib", "mov rbx, rdi")
    register_kprobe(machine, Kprobe(addr=inner))
    assert machine.read(start, 16) == before
    assert machine.read(inner, 1) == before[inner - start:inner - start + 1] != b"\xcc"
    assert machine.mem.is_patched(inner)
    assert machine.mem.is_patched(start)


def test_write_over_a_probed_byte_keeps_the_probe(machine: Machine) -> None:
    """Also for an optimized probe: the write drops cached code, the hook stays."""
    """Writing code under a probe updates the saved original, the int3 stays."""
    hits = []
    addr = machine.symbols["fib"]
    register_kprobe(machine, Kprobe(addr=addr, pre_handler=lambda kp, r: hits.append(1)))
    machine.write(addr, machine.read(addr, 4))
    assert machine.call("fib", 1) == 1
    assert hits == [1]


def test_rip_relative_instruction_runs_out_of_line_with_fixup() -> None:
    """mov rax, [rip+x] and lea rcx, [rip+x] keep their meaning in the slot."""
    m = guest.load("kunit")
    expected = m.call("rip_relative")
    start = m.symbols["rip_relative"]
    steps = []
    for off in (0, 7):                 # the mov and the lea
        register_kprobe(m, Kprobe(addr=start + off, post_handler=lambda kp, r, f: steps.append(kp.addr)))
    assert m.call("rip_relative") == expected == 42
    assert steps == [start, start + 7]


def test_regs_get_kernel_argument_reads_registers_then_stack() -> None:
    m = guest.load("kunit")
    args = []

    def pre(kp, regs):
        args.append([regs_get_kernel_argument(regs, n) for n in range(8)])
        return 0

    register_kprobe(m, Kprobe("sum8", pre_handler=pre))
    assert m.call("call_sum8") == 204
    assert args == [[1, 2, 3, 4, 5, 6, 7, 8]]


def test_probes_are_invisible_to_the_guest(machine: Machine) -> None:
    """Differential: the same results with a kprobe on every function entry,
    a post_handler probe inside each, and kretprobes on all of them."""
    funcs = ["fib", "ackermann", "is_even", "is_odd", "open_file", "open_loop"]
    calls = [("fib", (15,)), ("ackermann", (2, 3)), ("is_even", (31,)),
             ("is_odd", (31,)), ("open_loop", (200,))]
    plain = [machine.call(f, *a) for f, a in calls]
    for f in funcs:
        register_kprobe(machine, Kprobe(f, pre_handler=lambda kp, r: 0))
        register_kprobe(machine, Kprobe(f, offset=1, post_handler=lambda kp, r, fl: None))
        register_kretprobe(machine, Kretprobe(f, handler=lambda ri, r: None, maxactive=64))
    assert [machine.call(f, *a) for f, a in calls] == plain


def test_fallback_register_access_gives_the_same_results(regs_mode: bool) -> None:
    m = guest.load("fib", fast_registers=regs_mode)
    assert m.cpu.is_fast == regs_mode
    values = []
    register_kretprobe(m, Kretprobe("fib", handler=lambda ri, r: values.append(regs_return_value(r)),
                                    maxactive=32))
    assert m.call("fib", 12) == fib(12)
    assert len(values) == 2 * fib(13) - 1


def test_handler_exception_surfaces_from_call_and_the_guest_stays_whole(machine: Machine) -> None:
    def pre(kp, regs):
        regs.rdi = 999                 # discarded: the handler fails
        raise RuntimeError("handler bug")

    kp = Kprobe("open_file", pre_handler=pre)
    register_kprobe(machine, kp)
    with pytest.raises(RuntimeError, match="handler bug") as info:
        machine.call("open_loop", 10)
    assert any("probe handler" in note for note in info.value.__notes__)
    unregister_kprobe(machine, kp)
    assert machine.call("open_loop", 10) == 2


def test_kprobe_on_a_mid_function_instruction_that_is_a_branch(machine: Machine) -> None:
    """Relative jcc/call/jmp are emulated: results unchanged, post sees the target."""
    start = machine.symbols["fib"]
    code = machine.read(start, machine.symbols.get_symbol("fib").size)
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    insns = list(Cs(CS_ARCH_X86, CS_MODE_64).disasm(code, start))
    counts: dict[int, int] = {}
    for insn in insns:
        register_kprobe(machine, Kprobe(addr=insn.address,
                                        post_handler=lambda kp, r, f: counts.__setitem__(
                                            kp.addr, counts.get(kp.addr, 0) + 1)))
    assert machine.call("fib", 10) == fib(10)
    assert counts[start] == 2 * fib(11) - 1


def test_a_call_aborted_mid_step_leaves_no_stuck_state(machine: Machine) -> None:
    """A pre_handler raising on an out-of-line probe with a post_handler stops the
    guest before the slot runs; the next call must not see "a handler is running"
    (every hit would be missed) nor a stale pending step."""
    counts = {"pre": 0, "post": 0}

    def pre(kp, regs):
        counts["pre"] += 1
        if counts["pre"] == 1:
            raise RuntimeError("first hit fails")
        return 0

    def post(kp, regs, flags):
        counts["post"] += 1

    kp = Kprobe("fib", offset=1, pre_handler=pre, post_handler=post)   # mov rbp, rsp
    register_kprobe(machine, kp)
    with pytest.raises(RuntimeError, match="first hit fails"):
        machine.call("fib", 3)
    assert machine.call("fib", 3) == fib(3)
    assert counts == {"pre": 1 + 5, "post": 5}
    assert kp.nmissed == 0
    unregister_kprobe(machine, kp)
    assert machine.call("fib", 3) == fib(3)
