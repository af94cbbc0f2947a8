"""Fetch arguments evaluated at real probe hits (kernel/trace/trace_probe_tmpl.h semantics).

The guest: ``caller`` calls ``target(1, 2, &greeting, 4, 5, 6, 7, 8)`` (the last two
on the stack); ``target`` returns ``a + b``, clobbers ``rdi`` and writes ``'J'`` over
``greeting[0]`` before returning, so entry and return values differ.
"""

from __future__ import annotations

from typing import Any

import pytest

from emu import Machine
from emu._memory import PROT_RW
from probes import (
    Kprobe,
    Kretprobe,
    PtRegs,
    register_kprobe,
    register_kretprobe,
    unregister_kprobe,
    unregister_kretprobe,
)
from probes.events import FetchContext, Fetcher, compile_arg, format_value, parse


def _bytes(data: bytes) -> str:
    return ".byte " + ", ".join(str(b) for b in data)


_OTHER = "wörld".encode() + bytes([0xFF, 0, 0])    # invalid UTF-8 before the NUL
SOURCE = f"""
target:
    push rbp
    mov rbp, rsp
    lea rax, [rdi + rsi]
    mov rdi, 99
    mov byte ptr [rdx], 0x4a
    pop rbp
    ret
caller:
    push rbp
    mov rbp, rsp
    push 8
    push 7
    mov rdi, 1
    mov rsi, 2
    lea rdx, [rip + greeting]
    mov rcx, 4
    mov r8, 5
    mov r9, 6
    call target
    add rsp, 16
    pop rbp
    ret
neg:
    mov rax, -5
    ret
greeting:
    {_bytes(b"hello" + bytes(3))}
table:
    .quad greeting
    .quad other
    .quad 0x8899aabbccddeeff
    .quad 0
other:
    {_bytes(_OTHER)}
"""
SCRATCH = 0x1000_0000          # a page-aligned scratch area the tests fill


@pytest.fixture
def m() -> Machine:
    machine = Machine.from_asm(SOURCE)
    machine.mem.map(SCRATCH, 0x3000, PROT_RW, "[scratch]")
    return machine


def context(m: Machine, regs: PtRegs, **kw: Any) -> FetchContext:
    return FetchContext(regs, m.read, m.symbolize, m.resolve, comm="fetchtest", **kw)


def hit(m: Machine, line: str, func: str = "caller") -> dict[str, Any]:
    """Plant ``line``'s probe, call ``func`` once, return ``name -> (value, text)``."""
    spec = parse(line)
    fetchers = [compile_arg(a, spec.kind) for a in spec.args]
    seen: list[dict[str, Any]] = []

    def record(ctx: FetchContext) -> None:
        seen.append({f.name: (v := f.fetch(ctx), format_value(f, v)) for f in fetchers})

    if spec.kind == "p":
        kp = Kprobe(symbol_name=spec.symbol, offset=spec.offset,
                    pre_handler=lambda kp, regs: record(context(m, regs)))
        register_kprobe(m, kp)
        m.call(func)
        unregister_kprobe(m, kp)
    else:
        entries: list[dict[str, Any]] = []

        def entry(ri: Any, regs: PtRegs) -> int:
            ctx = context(m, regs)
            entries.append({f.name: f.capture(ctx) for f in fetchers if f.needs_entry})
            return 0

        def ret(ri: Any, regs: PtRegs) -> None:
            record(context(m, regs, entry=entries.pop(), duration_ns=1234))

        rp = Kretprobe(symbol_name=spec.symbol, handler=ret, entry_handler=entry)
        register_kretprobe(m, rp)
        m.call(func)
        unregister_kretprobe(m, rp)
    assert len(seen) == 1
    return seen[0]


def values(m: Machine, line: str) -> dict[str, Any]:
    return {name: value for name, (value, _) in hit(m, line).items()}


def texts(m: Machine, line: str) -> dict[str, str]:
    return {name: text for name, (_, text) in hit(m, line).items()}


def test_registers(m: Machine) -> None:
    got = values(m, "p target a=%di b=%rsi c=%dx ip=%ip f=%flags sp=%sp st=$stack "
                    "oa=%orig_ax cs=%cs")
    assert (got["a"], got["b"], got["c"]) == (1, 2, m.resolve("greeting"))
    assert got["ip"] == m.resolve("target") and got["sp"] == got["st"]
    assert got["f"] & 0x2                      # EFLAGS bit 1 is always set
    assert (got["oa"], got["cs"]) == (2**64 - 1, 0x10)


def test_arguments_and_stack(m: Machine) -> None:
    """$argN in System V order (rdi rsi rdx rcx r8 r9, then the stack); $stackN above rsp."""
    got = values(m, "p target " + " ".join(f"a{n}=$arg{n}" for n in range(1, 9)) +
                 " s0=$stack0:symbol s1=$stack1 s2=$stack2")
    assert [got[f"a{n}"] for n in range(1, 9)] == [1, 2, m.resolve("greeting"), 4, 5, 6, 7, 8]
    assert got["s0"] == "caller+0x37"          # the return address
    assert (got["s1"], got["s2"]) == (7, 8)


def test_stack_words_outside_memory_read_zero(m: Machine) -> None:
    """regs_get_kernel_stack_nth gives 0 outside the stack, not a fault."""
    assert values(m, "p target a=$stack2048 b=$arg2048")["a"] == 0


def test_memory_and_symbols(m: Machine) -> None:
    table, greeting = m.resolve("table"), m.resolve("greeting")
    got = values(m, f"p target a=@table b=@table+8 c=@{table}:x32 d=@table-0x8:u8 "
                    "s=@greeting:string t=@table+16:s64")
    assert (got["a"], got["b"], got["c"]) == (greeting, m.resolve("other"), greeting)
    assert got["d"] == ord("h") and got["s"] == "hello"     # table - 8 is greeting
    assert got["t"] == 0x8899AABBCCDDEEFF - 2**64


def test_dereference_nesting(m: Machine) -> None:
    got = values(m, "p target a=+0(%dx):string b=+1(%dx):string c=+0(@table+8):string "
                    "d=+0(+0(%sp)):x8 e=-16(@table+8):u8 u=+u0(%dx):ustring "
                    "f=+u0(@table+8):char")
    assert (got["a"], got["b"], got["c"]) == ("hello", "ello", "w\u00f6rld\ufffd")
    assert got["d"] == 0x48                     # first byte of "add rsp, 16" after the call
    assert got["e"] == 0xFF                     # other - 16 is table + 16, 0x...eeff
    assert (got["u"], got["f"]) == ("hello", "w")


def test_immediates(m: Machine) -> None:
    got = texts(m, r'p target a=\123 b=\0x7b:x8 c=\-1:s16 d=\-1:u16 e=\"imm_text" '
                   rf"f=\{m.resolve('greeting')}:string")
    assert got == {"a": "0x7b", "b": "0x7b", "c": "-1", "d": "65535", "e": '"imm_text"',
                   "f": '"hello"'}


@pytest.mark.parametrize(("type_", "value", "text"), [
    ("u8", 0xFF, "255"), ("u16", 0xEEFF, "61183"), ("u32", 0xCCDDEEFF, "3437096703"),
    ("u64", 0x8899AABBCCDDEEFF, "9843086184167632639"),
    ("s8", -1, "-1"), ("s16", -4353, "-4353"), ("s32", -857870593, "-857870593"),
    ("s64", 0x8899AABBCCDDEEFF - 2**64, "-8603657889541918977"),
    ("x8", 0xFF, "0xff"), ("x16", 0xEEFF, "0xeeff"), ("x32", 0xCCDDEEFF, "0xccddeeff"),
    ("x64", 0x8899AABBCCDDEEFF, "0x8899aabbccddeeff"),
    ("char", "\xff", "'\xff'"),
])
def test_numeric_types(m: Machine, type_: str, value: object, text: str) -> None:
    """u as %u, s as %d, x as 0x%x, char as '%c' (trace_probe.c print functions)."""
    assert hit(m, f"p target v=@table+16:{type_}")["v"] == (value, text)


def test_raw_values_are_truncated_to_the_type(m: Machine) -> None:
    """fetch_store_raw keeps the low bytes of a register."""
    got = values(m, r"p target a=\0x1ff:u8 b=\0x1ff:s8 c=\0x12345:x16")
    assert (got["a"], got["b"], got["c"]) == (0xFF, -1, 0x2345)


def test_symbol_types(m: Machine) -> None:
    got = texts(m, "p target+1 ip=%ip:symbol ret=+8(%sp):symbol s=+8(%sp):symstr n=\\16:symbol")
    assert got == {"ip": "target+0x1", "ret": "caller+0x37", "s": '"caller+0x37"', "n": "0x10"}


def test_bitfields(m: Machine) -> None:
    """b<W>@<O>/<S>: W bits from bit O of a u<S> container, printed unsigned."""
    got = values(m, "p target a=@table+16:b4@4/8 b=@table+16:b4@0/8 c=@table+16:b1@63/64 "
                    "d=@table+16:b16@8/32 e=\\0xabcd:b8@4/16")
    assert (got["a"], got["b"], got["c"], got["d"], got["e"]) == (0xF, 0xF, 1, 0xDDEE, 0xBC)


def test_arrays(m: Machine) -> None:
    got = hit(m, "p target a=@table+16:u8[4] b=+0(%dx):char[5] c=+0(@table):s16[2] "
                 "d=@table:string[2] e=@table+16:b4@4/8[2]")
    assert got["a"] == ([0xFF, 0xEE, 0xDD, 0xCC], "{255,238,221,204}")
    assert got["b"] == (list("hello"), "{'h','e','l','l','o'}")
    assert got["c"][1] == "{25960,27756}"
    assert got["d"] == (["hello", "w\u00f6rld\ufffd"], '{"hello","w\u00f6rld\ufffd"}')
    assert got["e"][0] == [0xF, 0xE]


def test_comm(m: Machine) -> None:
    assert hit(m, "p target c=$comm d=$COMM:string")["c"] == ("fetchtest", '"fetchtest"')


def test_faults_never_escape(m: Machine) -> None:
    """A failed read is None, printed "(fault)": strings as the kernel does, numbers and
    arrays instead of the stale ring-buffer bytes the kernel would show."""
    got = texts(m, r"p target a=+0(\0):u64 b=+0(+0(\0)):string c=+0(\8):u8[2] d=@nosuch "
                   r"e=\0x10:string f=+0(+0(\0)):u8[2] g=@nosuch:symstr")
    assert got == {**{k: "(fault)" for k in "abdefg"}, "c": "{(fault),(fault)}"}


def test_strings_are_read_page_by_page_up_to_4095_bytes(m: Machine) -> None:
    end = SCRATCH + 0x3000
    m.write(end - 4, b"abc\0")                # NUL right before the unmapped end
    m.write(SCRATCH, b"A" * 5000 + b"\0")
    got = values(m, rf"p target a=\{end - 4}:string b=\{SCRATCH}:string")
    assert (got["a"], got["b"]) == ("abc", "A" * 4095)
    m.write(end - 4, b"tail")                  # now no NUL before the end of the mapping
    assert values(m, rf"p target c=\{end - 4}:string")["c"] is None


def test_return_probe_retval_and_entry_values(m: Machine) -> None:
    """$argN at a return is the argument at entry; $entry(...) around the whole argument
    reads all of it at entry; inside a dereference only its load is from the entry."""
    got = texts(m, "r target ret=$retval:s64 a1=$arg1 di=%di e=$entry(+0(%dx)):string "
                   "now=+0($entry(%dx)):string was=$entry(%dx):symbol d=$duration:u64")
    assert got == {"ret": "3", "a1": "0x1", "di": "0x63", "e": '"hello"', "now": '"Jello"',
                   "was": "greeting+0x0", "d": "1234"}


def test_retval_is_signed_only_by_its_type(m: Machine) -> None:
    got = hit(m, "r neg a=$retval b=$retval:s32 c=$retval:u8", func="neg")
    assert got == {"a": (2**64 - 5, "0xfffffffffffffffb"), "b": (-5, "-5"), "c": (251, "251")}


def test_needs_entry_and_capture() -> None:
    spec = parse("r target a=$arg1 b=$retval c=$entry(%si) d=$duration e=+0($entry(%di)) f=%ax")
    fetchers = [compile_arg(a, spec.kind) for a in spec.args]
    assert [f.needs_entry for f in fetchers] == [True, False, True, True, True, False]
    kprobe = [compile_arg(a, "p") for a in parse("p target a=$arg1 f=%ax").args]
    assert [f.needs_entry for f in kprobe] == [False, False]


def test_missing_entry_data_is_a_fault(m: Machine) -> None:
    spec = parse("r target a=$arg1 e=$entry(%si) d=$duration")
    fetchers = [compile_arg(a, "r") for a in spec.args]
    seen: list[list[Any]] = []
    rp = Kretprobe(symbol_name="target",
                   handler=lambda ri, regs: seen.append([f.fetch(context(m, regs)) for f in fetchers]))
    register_kretprobe(m, rp)
    m.call("caller")
    assert seen == [[None, None, None]]


def test_fetcher_attributes() -> None:
    spec = parse("p target a=%di:x8 b=%si:s16 c=+0(%dx):u8[3] d=@table+8:string e=+0(@sym):u32")
    fs: list[Fetcher] = [compile_arg(a, "p") for a in spec.args]
    assert [(f.name, f.type, f.hex, f.signed, f.count) for f in fs] == [
        ("a", "x8", True, False, 0), ("b", "s16", False, True, 0), ("c", "u8[3]", False, False, 3),
        ("d", "string", False, False, 0), ("e", "u32", False, False, 0)]
    assert [f.symbols for f in fs] == [(), (), (), ("table",), ("sym",)]


def test_compile_arg_needs_a_parsed_arg_and_a_kind() -> None:
    from probes.events import FetchArg
    with pytest.raises(ValueError):
        compile_arg(FetchArg("x", "%di"), "p")
    with pytest.raises(ValueError):
        compile_arg(parse("p f %di").args[0], "-")


def test_format_value_faults_in_arrays() -> None:
    f = compile_arg(parse("p f +0(%di):x8[3]").args[0], "p")
    assert format_value(f, [1, None, 255]) == "{0x1,(fault),0xff}"
    assert format_value(f, None) == "(fault)"
