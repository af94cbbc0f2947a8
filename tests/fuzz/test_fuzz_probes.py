"""Fuzzing probe placement: random probes on random code, in random orders and modes.

Rule pinned (Documentation/trace/kprobes.rst, and the README's "invisible" claim):
whatever kprobes and kretprobes are registered wherever, with whatever handlers,
enabled, disabled, optimized or not, armed or disarmed, and unregistered in
whatever order, the guest computes what it computes unprobed (the return value,
the bytes it stored), ``m.read`` shows the original code at every moment, and once
every probe is gone the code is byte-identical to the unprobed machine's through
``m.read`` and through Unicorn itself (``m.uc.mem_read``); ``list_probes`` is empty.
Registration errors are the kernel's: ``EILSEQ`` inside an instruction, ``EINVAL``
for a kretprobe off a function's entry or a probe registered twice. Each probe's
hits are the executions of its address while it was live (an unprobed twin with a
code hook counts them), and a kretprobe's counters balance.

The code is ``guest/zoo.s`` (every instruction class kprobes must handle),
``guest/fib.s`` + ``even_odd.s`` (recursion: instances run out), or a random
function assembled with Keystone from templates (ALU, RIP-relative loads and
stores, push/pop, forward jcc, loop/jrcxz, direct, indirect and memory calls,
``ret imm16``, SSE, ``rep movsb``, the red zone, ``pushfq``). Handlers count, read
every register, write one back, unwind the stack, or call into the guest (whose
hits are then missed). Each case runs in a child (:class:`tests.fuzz.conftest.Sandbox`).
"""

from __future__ import annotations

import errno
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

import guest
from emu import Machine
from tests.fuzz.conftest import KnownBug, KnownBugHit, Sandbox, budget

# --- random code ----------------------------------------------------------------------------
POOL = ["rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "rbx", "r12"]
ALU = ["add", "sub", "xor", "and", "or", "imul", "adc", "sbb"]
SHIFT = ["shl", "shr", "sar", "rol", "ror"]
JCC = ["je", "jne", "jl", "jg", "jb", "ja", "js", "jns", "jle", "jae"]
CMOV = ["cmovg", "cmovl", "cmove", "cmovne", "cmovb"]
DATA_WORDS = 8
SCRATCH_WORDS = 16


def _templates(r: str, s: str, imm: int, n: int) -> list[list[str]]:
    """The templates for ``r``, ``s`` (pool registers), ``imm`` (a 31-bit immediate)
    and ``n`` (unique per block: labels, and a small count)."""
    k, small = n % DATA_WORDS, 1 + n % 7
    simple = [f"add {r}, {imm & 0xFFF}", f"xor {s}, {r}"]
    table: list[list[str]] = [
        [f"{ALU[n % len(ALU)]} {r}, {s}"],
        [f"{ALU[n % 7]} {r}, {imm}" if ALU[n % 7] != "imul" else f"imul {r}, {r}, {imm}"],
        [f"lea {r}, [{s} + {r}*4 + {imm & 0xFFFF}]"],
        [f"{SHIFT[n % len(SHIFT)]} {r}, {small}"],
        [f"mov {r}, qword ptr [rip + data + {8 * k}]"],
        [f"mov qword ptr [rip + scratch + {8 * (n % SCRATCH_WORDS)}], {r}"],
        [f"add qword ptr [rip + scratch + {8 * (n % SCRATCH_WORDS)}], {r}"],
        [f"push {r}", f"pop {s}"],
        [f"push {imm}", f"pop {r}"],
        [f"cmp {r}, {imm}", f"{JCC[n % len(JCC)]} .f{n}", *simple, f".f{n}:"],
        [f"mov rdi, {r}", "call helper", f"mov {s}, rax"],
        [f"mov rdi, {r}", "call qword ptr [rip + fptr]", f"mov {s}, rax"],
        ["lea r11, [rip + helper]", f"mov rdi, {r}", "call r11", f"mov {s}, rax"],
        [f"push {r}", "call helper_pop8", f"mov {s}, rax"],
        [f"mov ecx, {small}", f".l{n}:", f"add {r if r != 'rcx' else 'rax'}, rcx", f"loop .l{n}"],
        [f"mov rcx, {r}", f"and ecx, {n % 2}", f"jrcxz .s{n}", f"add {s}, 1", f".s{n}:"],
        ["nop", ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00", f"xchg {r}, {s}"],
        ["cqo", f"cmp {r}, {s}", "setg cl", f"movzx {s}, cl"],
        [f"cmp {r}, {imm}", f"{CMOV[n % len(CMOV)]} {r}, {s}", f"bswap {s}", f"neg {r}", f"not {s}"],
        [f"movq xmm0, {r}", "paddq xmm0, xmm0", f"movq {s}, xmm0"],
        ["lea rsi, [rip + scratch]", "lea rdi, [rip + scratch + 64]", f"mov ecx, {small}",
         "rep movsb"],
        ["pushfq", f"pop {r}"],
        [f"mov rax, {r}", "xor edx, edx", f"mov {s if s not in ('rax', 'rdx') else 'r8'}, {small + 1}",
         f"div {s if s not in ('rax', 'rdx') else 'r8'}"],
        [f"mov qword ptr [rsp - 16], {r}", *simple, f"mov {s}, qword ptr [rsp - 16]"],
        [f"movzx {r}, byte ptr [rip + data + {k}]", f"inc {r}", f"dec {s}"],
    ]
    return table


BLOCKS = len(_templates("rax", "rcx", 1, 0))


def random_source(blocks: list[tuple[int, int, int, int]], endbr: bool) -> str:
    """A function ``rnd(a, b)`` of the blocks (template, r, s, imm), its helpers and data."""
    body = ["rnd:"] + (["    endbr64"] if endbr else []) + [
        "    push rbp", "    mov rbp, rsp", "    push rbx", "    push r12",
        "    mov rax, rdi", "    mov rcx, rsi", "    lea rdx, [rdi + 7]", "    mov rbx, rsi",
        "    xor r8d, r8d", "    mov r9, 3", "    mov r10, rdi", "    mov r11, 11", "    mov r12, 12"]
    for n, (kind, r, s, imm) in enumerate(blocks):
        lines = _templates(POOL[r % len(POOL)], POOL[s % len(POOL)], imm, n)[kind % BLOCKS]
        body += ["    " + line for line in lines]
    body += [f"    add rax, {reg}" for reg in POOL[1:]] + [
        "    pop r12", "    pop rbx", "    pop rbp", "    ret",
        "helper:", "    lea rax, [rdi + 3]", "    ret",
        "helper_pop8:", "    mov rax, qword ptr [rsp + 8]", "    imul rax, rax, 3", "    ret 8",
        "fptr:", "    .quad helper",
        "data:", *[f"    .quad {0x1234567 * (i + 1) + i}" for i in range(DATA_WORDS)],
        "scratch:", *["    .quad 0"] * SCRATCH_WORDS]
    return "\n".join(body) + "\n"


# --- the plan -------------------------------------------------------------------------------
# A probe: ("k", site, pre, post, flags) or ("r", site, handler, entry, data_size, maxactive)
#   site: ("at", i) the i-th instruction (wrapping), ("in", i, j) inside one (EILSEQ
#   expected), ("entry", i) the i-th function's entry.
#   pre:   None, "count", "regs" (reads every register and the stack, writes rax back
#          unchanged), "nested" (calls helper from the handler), "trace" (stack_trace)
#   post:  None, "count"
#   flags: 0 or KPROBE_FLAG_DISABLED
#   entry: None, 0 or 1 (its return value); handler: None, "count", "trace"
# Actions between the registrations: ("call", input), ("disable", p), ("enable", p),
# ("unregister", p), ("register", p) again, ("optimize", bool), ("disarm_all",),
# ("arm_all",), ("batch", [probes...]) through register_kprobes.
SITE = st.one_of(st.tuples(st.just("at"), st.integers(0, 200)),
                 st.tuples(st.just("in"), st.integers(0, 200), st.integers(0, 14)),
                 st.tuples(st.just("entry"), st.integers(0, 2)))
KPROBE = st.tuples(st.just("k"), SITE, st.sampled_from([None, "count", "regs", "nested", "trace"]),
                   st.sampled_from([None, "count"]), st.sampled_from([0, 2]))
KRETPROBE = st.tuples(st.just("r"), SITE, st.sampled_from([None, "count", "trace"]),
                      st.sampled_from([None, 0, 1]), st.sampled_from([0, 8, 64]),
                      st.sampled_from([0, 1, 2, 16]))
PROBE = st.one_of(KPROBE, KPROBE, KRETPROBE)
ACTION = st.one_of(
    st.tuples(st.just("call"), st.integers(0, 3)),
    st.tuples(st.sampled_from(["disable", "enable", "unregister", "register"]), st.integers(0, 30)),
    st.tuples(st.just("optimize"), st.booleans()),
    st.tuples(st.sampled_from(["disarm_all", "arm_all"])),
    st.tuples(st.just("batch"), st.lists(PROBE, min_size=1, max_size=3)),
)
INPUTS = [(0, 0), (1, 2), (12, 5), (-7, 1 << 40)]
# The bundled programs: source, (entry, helper, third function), the end of the code
# (data follows; None: the end of the third function), and inputs of the entry.
# The helper is what "nested" handlers call.
PROGRAMS = {
    "zoo": (("zoo",), ("zoo", "zoo_double", "zoo_pop8"), "zoo_k", [(0,), (1,), (11,), (12,)]),
    "fib": (("fib", "even_odd"), ("fib_loop", "fib", "is_even"), None, [(0, 1), (5, 2), (10, 1), (3, 3)]),
}
PLAN = st.fixed_dictionaries({
    "optimize": st.booleans(),
    "probes": st.lists(PROBE, min_size=1, max_size=10),
    "actions": st.lists(ACTION, max_size=12),
    "order": st.integers(0, 1 << 32),     # seeds the final unregistration order
})
CODE = st.one_of(
    st.sampled_from([("zoo", None), ("fib", None)]),
    st.tuples(st.just("random"), st.tuples(
        st.lists(st.tuples(st.integers(0, BLOCKS - 1), st.integers(0, 10), st.integers(0, 10),
                           st.integers(1, 0x7FFF_FFFF)), min_size=1, max_size=25),
        st.booleans())),
)


# --- the job (in the sandbox's child) --------------------------------------------------------
class _Probe:
    """One probe of the plan, its object and what it saw."""

    def __init__(self, spec: tuple[Any, ...], addr: int, expect: int) -> None:
        self.spec, self.addr, self.expect = spec, addr, expect    # expect: 0 or an errno
        self.obj: Any = None
        self.hits = self.posts = self.entries = self.skipped = self.returns = 0
        self.executions = 0         # of its address while it was live (the twin's count)
        self.base = (0, 0, 0)       # the object's (nmissed, kp.nmissed, nunwound) at registration

    @property
    def kind(self) -> str:
        return str(self.spec[0])


class Run:
    """A plan on a probed machine and its unprobed twin, checked as it goes."""

    def __init__(self, code: tuple[str, Any], plan: dict[str, Any]) -> None:
        from capstone import CS_ARCH_X86, CS_MODE_64, Cs

        from probes import set_optimization

        if code[0] in PROGRAMS:
            sources, self.funcs, end, self.inputs = PROGRAMS[code[0]]
            self.source = guest.source(*sources)
        else:
            self.source = random_source(*code[1])
            self.funcs, end, self.inputs = ("rnd", "helper", "helper_pop8"), "fptr", INPUTS
        self.plan = plan
        self.m = Machine.from_asm(self.source)
        self.twin = Machine.from_asm(self.source)
        sym = self.symbol
        self.base = sym(self.funcs[0]).addr
        self.end = sym(end).addr if end else sym(self.funcs[2]).end     # code before, data after
        self.data = (sym("fptr").addr, sym("scratch").end) if code[0] == "random" else None
        self.original = self.twin.read(self.base, self.end - self.base)
        cs = Cs(CS_ARCH_X86, CS_MODE_64)
        self.insns: list[tuple[int, int]] = []
        self.rep: set[int] = set()      # Unicorn's code hook fires on each iteration: no count
        for name in self.funcs:
            f = sym(name)
            for i in cs.disasm(self.twin.read(f.addr, f.size), f.addr):
                self.insns.append((i.address, i.size))
                if i.mnemonic.startswith("rep"):
                    self.rep.add(i.address)
        self.entries = {sym(name).addr for name in self.funcs}
        self.entries |= {a + 4 for a in self.entries                  # after endbr64 too (IBT)
                         if self.twin.read(a, 4) == bytes.fromhex("f30f1efa")}
        self.executed: Counter[int] = Counter()
        for addr, _size in self.insns:
            self.twin.hook_code(addr, lambda a: self.executed.update([a]))
        self.probes: list[_Probe] = []
        self.armed = True
        self.nested = 0
        set_optimization(self.m, plan["optimize"])

    def symbol(self, name: str) -> Any:
        found = self.twin.symbols.get_symbol(name)
        assert found is not None, name
        return found

    # --- the plan ---------------------------------------------------------------------
    def go(self) -> dict[str, Any]:
        import random

        for spec in self.plan["probes"]:
            self.register_new([spec])
        self.call(1)
        for action in self.plan["actions"]:
            self.act(action)
        self.call(2)
        live = [p for p in self.probes if p.obj is not None and self.registered(p)]
        random.Random(self.plan["order"]).shuffle(live)
        for p in live:
            self.check_counts(p)
            self.unregister(p)
        self.call(3)
        self.check_memory(raw=True)
        from probes import list_probes
        assert list_probes(self.m) == "", list_probes(self.m)
        return {"probes": len(self.probes), "nested": self.nested}

    def act(self, action: tuple[Any, ...]) -> None:
        from probes import arm_all, disarm_all, set_optimization

        op = action[0]
        target = self.probes[action[1] % len(self.probes)] if op in (
            "disable", "enable", "unregister", "register") and self.probes else None
        if op == "call":
            self.call(action[1])
        elif op == "optimize":
            set_optimization(self.m, action[1])
        elif op in ("arm_all", "disarm_all"):
            (arm_all if op == "arm_all" else disarm_all)(self.m)
            self.armed = op == "arm_all"
        elif op == "batch":
            self.register_new(action[1])
        elif target is not None and target.obj is not None:
            getattr(self, op)(target)

    # --- registration -----------------------------------------------------------------
    def site(self, spec: tuple[Any, ...]) -> tuple[int, int]:
        """The address of a probe's site, and the errno its registration must give."""
        where = spec[1]
        kret = spec[0] == "r"
        if where[0] == "entry":
            addr = int(self.symbol(self.funcs[where[1] % 3]).addr)
            return addr, 0
        if where[0] == "at":
            addr = self.insns[where[1] % len(self.insns)][0]
            return addr, errno.EINVAL if kret and addr not in self.entries else 0
        multi = [(a, n) for a, n in self.insns if n > 1]
        addr, size = multi[where[1] % len(multi)]
        return addr + 1 + where[2] % (size - 1), errno.EINVAL if kret else errno.EILSEQ

    def register_new(self, specs: list[tuple[Any, ...]]) -> None:
        """Register ``specs`` (one, or a batch through register_k(ret)probes: all or none)."""
        from probes import ProbeError, register_kprobes, register_kretprobes

        made = []
        for spec in specs:
            addr, expect = self.site(spec)
            p = _Probe(spec, addr, expect)
            p.obj = self.make(p)
            made.append(p)
        if len(made) == 1:
            self.probes.append(made[0])
            self.register(made[0], fresh=True)
            return
        for kind, register in (("k", register_kprobes), ("r", register_kretprobes)):
            batch = [p for p in made if p.kind == kind]
            if not batch:
                continue
            bad = next((p.expect for p in batch if p.expect), 0)
            try:
                register(self.m, [p.obj for p in batch])
            except ProbeError as exc:
                assert bad and exc.errno == bad, f"batch {[p.spec for p in batch]}: {exc}"
                assert not any(self.registered(p) for p in batch), "a failed batch left probes registered"
                continue
            assert not bad, f"batch {[p.spec for p in batch]} registered, expected errno {bad}"
            for p in batch:
                self.probes.append(p)
                self.registered_now(p)

    def register(self, p: _Probe, fresh: bool = False) -> None:
        from probes import ProbeError, register_kprobe, register_kretprobe

        expect = p.expect if fresh or not self.registered(p) else errno.EINVAL
        try:
            (register_kretprobe if p.kind == "r" else register_kprobe)(self.m, p.obj)
        except ProbeError as exc:
            assert exc.errno == expect, f"{p.spec} at {p.addr:#x}: {exc} (expected errno {expect})"
            return
        assert not expect, f"{p.spec} at {p.addr:#x} registered, expected errno {expect}"
        self.registered_now(p)

    def registered_now(self, p: _Probe) -> None:
        kp = p.obj.kp if p.kind == "r" else p.obj
        assert kp.addr == p.addr, (kp.addr, p.addr)
        p.hits = p.posts = p.entries = p.skipped = p.returns = p.executions = 0
        p.base = (getattr(p.obj, "nmissed", 0), kp.nmissed, getattr(p.obj, "nunwound", 0))

    def registered(self, p: _Probe) -> bool:
        return bool((p.obj.kp if p.kind == "r" else p.obj).registered)

    def unregister(self, p: _Probe) -> None:
        from probes import unregister_kprobe, unregister_kretprobe

        (unregister_kretprobe if p.kind == "r" else unregister_kprobe)(self.m, p.obj)
        assert not self.registered(p)

    def enable(self, p: _Probe, on: bool = True) -> None:
        from probes import ProbeError, disable_kprobe, disable_kretprobe, enable_kprobe, enable_kretprobe

        fn: Any = {("k", True): enable_kprobe, ("k", False): disable_kprobe,
              ("r", True): enable_kretprobe, ("r", False): disable_kretprobe}[p.kind, on]
        try:
            fn(self.m, p.obj)
        except ProbeError as exc:
            assert exc.errno == errno.EINVAL and not self.registered(p), f"{p.spec}: {exc}"

    def disable(self, p: _Probe) -> None:
        self.enable(p, on=False)

    def live(self, p: _Probe) -> bool:
        kp = p.obj.kp if p.kind == "r" else p.obj
        return self.armed and self.registered(p) and not kp.disabled

    # --- handlers -----------------------------------------------------------------------
    def make(self, p: _Probe) -> Any:
        from probes import Kprobe, Kretprobe

        if p.kind == "k":
            _, _, pre, post, flags = p.spec
            return Kprobe(addr=p.addr, pre_handler=self.pre(p, pre) if pre else None,
                          post_handler=self.post(p) if post else None, flags=flags)
        _, _, handler, entry, data_size, maxactive = p.spec
        return Kretprobe(addr=p.addr, handler=self.ret(p, handler) if handler else None,
                         entry_handler=self.entry(p, entry) if entry is not None else None,
                         data_size=data_size, maxactive=maxactive)

    def pre(self, p: _Probe, kind: str) -> Any:
        from probes import stack_trace

        m = self.m

        def handler(kp: Any, regs: Any) -> int:
            p.hits += 1
            assert regs.rip == kp.addr == p.addr, (regs.rip, kp.addr, p.addr)
            if kind == "regs":
                [getattr(regs, r) for r in POOL + ["rbp", "rsp", "r13", "r14", "r15", "eflags"]]
                m.read(regs.rsp, 8)
                regs.rax = regs.rax
            elif kind == "nested":
                # Its hits are missed; the twin runs it too, so they count as executions.
                self.nested += 1
                assert m.call(self.funcs[1], 5) == self.twin.call(self.funcs[1], 5)
            elif kind == "trace":
                [m.symbolize(a) for a in stack_trace(m, regs)]
            return 0
        return handler

    def post(self, p: _Probe) -> Any:
        def handler(kp: Any, regs: Any, flags: int) -> None:
            p.posts += 1
            assert regs.rip != p.addr, "post_handler sees the next instruction"
        return handler

    def entry(self, p: _Probe, value: int) -> Any:
        def handler(ri: Any, regs: Any) -> int:
            p.entries += 1
            if value:
                p.skipped += 1
            if len(ri.data) >= 8:
                ri.data[:8] = regs.rsp.to_bytes(8, "little")
            return value
        return handler

    def ret(self, p: _Probe, kind: str) -> Any:
        from probes import stack_trace

        m = self.m

        def handler(ri: Any, regs: Any) -> None:
            p.returns += 1
            assert regs.rip == ri.ret_addr
            if len(ri.data) >= 8 and p.spec[3] is not None:       # rsp at entry, past the return
                assert regs.rsp - int.from_bytes(ri.data[:8], "little") in (8, 16)   # ret, ret 8
            if kind == "trace":
                [m.symbolize(a) for a in stack_trace(m, regs)]
        return handler

    # --- the checks ---------------------------------------------------------------------
    def call(self, which: int) -> None:
        args = self.inputs[which % len(self.inputs)]
        live = [p for p in self.probes if p.obj is not None and self.live(p)]
        before = Counter(self.executed)
        want = self.twin.call(self.funcs[0], *args)
        got = self.m.call(self.funcs[0], *args)
        assert got == want, f"{self.funcs[0]}{args} = {got} probed, {want} unprobed"
        if self.data is not None:
            lo, hi = self.data
            assert self.m.read(lo, hi - lo) == self.twin.read(lo, hi - lo), "stored bytes differ"
        for p in live:
            p.executions += self.executed[p.addr] - before[p.addr]
        self.check_memory(raw=False)

    def check_memory(self, raw: bool) -> None:
        size = self.end - self.base
        assert self.m.read(self.base, size) == self.original, "m.read shows changed code"
        if raw:
            assert bytes(self.m.uc.mem_read(self.base, size)) == self.original, \
                "code bytes differ from the unprobed machine's after every probe was unregistered"

    def check_counts(self, p: _Probe) -> None:
        if p.addr in self.rep:
            return
        if p.kind == "k":
            kp = p.obj
            seen = p.hits if kp.pre_handler else p.posts
            if kp.pre_handler or kp.post_handler:
                assert seen + kp.nmissed - p.base[1] == p.executions, \
                    f"{p.spec} at {p.addr:#x}: {seen} hits + {kp.nmissed} missed != {p.executions}"
            if kp.pre_handler and kp.post_handler:
                assert p.posts == p.hits
            return
        rp = p.obj
        missed = rp.nmissed - p.base[0] + rp.kp.nmissed - p.base[1]
        unwound = rp.nunwound - p.base[2]
        if rp.entry_handler is not None:
            assert p.entries + missed == p.executions, \
                f"{p.spec}: {p.entries} entries + {missed} missed != {p.executions}"
            if rp.handler is not None:
                assert p.returns + unwound == p.entries - p.skipped, f"{p.spec}: returns do not balance"
        elif rp.handler is not None:
            assert p.returns + unwound + missed == p.executions, f"{p.spec}: returns do not balance"
        assert rp.nfree == rp.maxactive, "an instance is not back on the free list"


def probe_run(code: tuple[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """Run the plan on ``code`` against an unprobed twin; raises on any rule broken."""
    return Run(code, plan).go()


# --- the tests ---------------------------------------------------------------------------------
def run_case(sandbox: Sandbox, code: tuple[str, Any], plan: dict[str, Any],
             known: tuple[KnownBug, ...] = ()) -> dict[str, Any]:
    result: dict[str, Any] = sandbox.check(probe_run, code, plan, timeout=60, known=known)
    return result


def test_random_code_assembles_and_runs() -> None:
    """Every template assembles and the unprobed function returns (the generator's own check)."""
    blocks = [(k, k, k + 3, 0x1234 + k) for k in range(BLOCKS)]
    for endbr in (False, True):
        m = Machine.from_asm(random_source(blocks, endbr))
        for a, b in INPUTS:
            m.call("rnd", a, b)


# --- what the fuzzer found ----------------------------------------------------------------------
# See tests/fuzz/test_fuzz_loader.py: a KnownBug lets the fuzzer look past an open bug;
# its minimized cases are strict xfails that fail once it is fixed.
KNOWN_BUGS: tuple[KnownBug, ...] = ()


@budget(100)
@given(code=CODE, plan=PLAN)
def test_random_probes_are_invisible(sandbox: Sandbox, code: tuple[str, Any], plan: dict[str, Any]) -> None:
    try:
        run_case(sandbox, code, plan, known=KNOWN_BUGS)
    except KnownBugHit:
        reject()


def _plan(*probes: tuple[Any, ...], actions: tuple[Any, ...] = (), optimize: bool = False,
          order: int = 0) -> dict[str, Any]:
    return {"optimize": optimize, "probes": list(probes), "actions": list(actions), "order": order}


REGRESSIONS = [     # (id, code, plan, (mark, bug) while it fails, else None)
    # Fixed in 8ed4d0d: a kretprobe on a function returning with `ret imm16` (zoo_pop8's
    # `ret 8`) stopped the guest with ProbeError(EFAULT, "return through the kretprobe
    # trampoline ... with no instance for that frame"): rsp was 8 above the recorded frame.
    ("kretprobe-ret-imm16", ("zoo", None), _plan(("r", ("entry", 2), None, None, 0, 0)), None),
    ("kretprobe-ret-imm16-optimized", ("zoo", None),
     _plan(("r", ("entry", 2), "count", 0, 8, 1), optimize=True), None),
    ("kretprobe-ret-imm16-beside-a-kprobe", ("zoo", None),
     _plan(("k", ("at", 0), None, None, 0), ("r", ("entry", 2), "count", 0, 8, 0)), None),
]


@pytest.mark.parametrize("code, plan, bug", [
    pytest.param(c, p, o and o[1], id=n, marks=o[0] if o else ()) for n, c, p, o in REGRESSIONS])
def test_regressions(sandbox: Sandbox, code: tuple[str, Any], plan: dict[str, Any],
                     bug: KnownBug | None) -> None:
    run_case(sandbox, code, plan, known=(bug,) if bug else ())
