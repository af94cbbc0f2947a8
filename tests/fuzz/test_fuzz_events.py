"""Fuzzing the probe-definition language: ``probes.events.parse`` and ``attach``.

Rule pinned (probes/events: "Errors are ``probes.events.ParseError`` with the
kernel's code"): any text given to ``parse`` gives a ``ProbeSpec`` or a
``ParseError`` (with a known code, a caret inside the line); any line given to
``attach(m, line, sink)`` on a loaded program attaches, or raises ``ParseError``,
or (``-:`` naming nothing attached) ``ProbeError(ENOENT)``. Attached events are
invisible: the program then runs to the output and status it has unprobed, every
event formats as text and JSON, and after ``detach`` of everything the code is
unchanged.

Lines come from a grammar of the language's fragments (heads, groups, events,
symbols, offsets, addresses, fetch arguments, types) recombined at random, from
word-level splices of valid lines, and from arbitrary text.
"""

from __future__ import annotations

import errno
import io
import string
from typing import Any

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

from probes.events import ERRORS, ParseError, parse
from tests.fuzz.conftest import KnownBug, KnownBugHit, Sandbox, budget
from tests.guests import BIN_DIR, guest_bin

# --- the grammar ------------------------------------------------------------------------------
SYMBOLS = ["fib", "main", "malloc", "printf", "strlen", "_start", "__libc_start_main",
           "nosuch", "libc.so.6:malloc", "ld-linux-x86-64.so.2:_dl_start", "fib.static:fib",
           "_IO_2_1_stdout_", "main_arena", ":fib", "fib:", "f*b", "fib.isra.0"]
OFFSETS = ["", "+0", "+1", "+3", "+4", "+7", "+9", "+0x8", "+31", "+48", "+49", "+0x1000", "-1",
           "+99999999999", "+0x", "+-4", "+ 4"]
ADDRS = ["0x401000", "0x4011f0", "0x0", "0", "0xffffffffffffffff", "0x7ffffffde000", "4198400",
         "0x401", "0x400000", "0x4c0000"]
HEADS = ["p", "r", "r1", "r10", "r4096", "r4097", "r0", "p5", "R", "pp", "r18446744073709551617"]
NAMES = ["", ":", ":ev", ":grp/ev", ":grp/", ":/ev", ":grp.ev", ":1bad", ":a-b/ev", ":g/e-v", ":" + "e" * 70,
         ":" + "g" * 70 + "/e", ":kprobes/p_fib_0", ":g/_"]
REGS = ["%di", "%si", "%ax", "%ip", "%sp", "%flags", "%rax", "%r15", "%orig_ax", "%cs", "%none", "%",
        "%bp", "%r8"]
VARS = ["$arg1", "$arg6", "$arg0", "$arg99", "$arg*", "$retval", "$stack", "$stack0", "$stack3",
        "$stack99999", "$comm", "$COMM", "$duration", "$entry(%di)", "$entry($arg1)", "$entry(",
        "$nosuch", "$", "$argx"]
IMMS = ["\\1", "\\0x10", "\\-5", "\\+5", "\\x", '\\"str"', '\\"unclosed', "\\99999999999999999999"]
TYPES = ["", ":u8", ":u16", ":u32", ":u64", ":s8", ":s16", ":s32", ":s64", ":x8", ":x16", ":x32",
         ":x64", ":char", ":string", ":ustring", ":symbol", ":symstr", ":b4@2/8", ":b0@0/8",
         ":b65@0/64", ":b3@6/8", ":u32[4]", ":string[2]", ":u8[64]", ":u8[65]", ":u8[0]", ":u8[",
         ":bad", ":", ":u8]"]

fetch: st.SearchStrategy[str] = st.deferred(lambda: st.one_of(
    st.sampled_from(REGS), st.sampled_from(VARS), st.sampled_from(IMMS),
    st.builds("@{}".format, st.sampled_from(ADDRS)),
    st.builds("@{}{}".format, st.sampled_from(SYMBOLS), st.sampled_from(OFFSETS)),
    st.builds("{}{}({})".format, st.sampled_from(["+", "-", "+u", "+0", "-8", "+8", "+u8", "+0x10",
                                                  "+999999999999999999999", ""]),
              st.sampled_from(["0", "8", "", "16"]), fetch),
    st.builds("$entry({})".format, fetch),
))
arg = st.builds("{}{}{}".format,
                st.sampled_from(["", "a=", "n=", "arg1=", "=", "1x=", "common_pid=", "x" * 40 + "=",
                                 "b="]),
                fetch, st.sampled_from(TYPES))
target = st.one_of(
    st.builds("{}{}{}".format, st.sampled_from(SYMBOLS), st.sampled_from(OFFSETS),
              st.sampled_from(["", "", "%return", "%ret", "%"])),
    st.sampled_from(ADDRS),
)
# Mostly valid lines: real symbols at boundaries, valid names, fetches and types.
GOOD_TARGETS = ["fib", "main", "fib+3", "fib+9", "malloc", "strlen", "printf", "fib%return",
                "main%return", "0x401000", "libc.so.6:malloc"]
GOOD_FETCH = ["%di", "%si", "%ax", "%sp", "%ip", "%flags", "$stack", "$stack0", "$stack2", "$comm",
              "@main_arena", "@fib+4", "+0(%sp)", "+8(%sp)", "+0(+0(%sp))", "-8(%bp)", "+u0(%di)",
              "\\7", '\\"hi"', "@0x401000", "$arg1", "$arg2", "$retval", "$duration",
              "$entry(%di)", "+0($entry(%sp))"]
GOOD_TYPES = ["", ":u8", ":s16", ":u32", ":x64", ":s64", ":char", ":symbol", ":string", ":symstr",
              ":b4@2/8", ":u8[4]", ":x16[2]", ":string[2]"]
good_arg = st.builds("a{}={}{}".format, st.integers(0, 9), st.sampled_from(GOOD_FETCH),
                     st.sampled_from(GOOD_TYPES))
good_line = st.builds(
    lambda h, n, t, a: " ".join([h + n, t, *a]),
    st.sampled_from(["p", "r", "r10", "r1", "p", "r"]),
    st.sampled_from(["", "", ":ev", ":g/a", ":g/b", ":h/"]),
    st.sampled_from(GOOD_TARGETS), st.lists(good_arg, max_size=4, unique_by=lambda a: a.split("=")[0]))
grammar_line = st.one_of(
    st.builds(lambda h, n, t, a, sep: sep.join([h + n, t, *a]),
              st.sampled_from(HEADS), st.sampled_from(NAMES), target, st.lists(arg, max_size=5),
              st.sampled_from([" ", " ", "  ", "\t"])),
    st.builds("-{} {}".format, st.sampled_from(NAMES), st.sampled_from(["", "fib", "fib n=%di"])),
)
VALID = ["p fib n=%di:u32", "r fib ret=$retval:s32", "p:g/e fib+3 a=+0(%sp):x64 b=$stack1",
         "r5:grp/ev main $retval $arg1 $duration", "p main argv=+0(%si):string s=@main_arena:u8[4]",
         "p:g/ret fib%return r=$retval", "p 0x401000", "-:g/e", "p:kp/one fib n=$arg1 c=$comm f=%flags",
         "r:g/two fib n=$entry(%di):u16 d=$duration:u64 b=%ax:b4@2/8"]
splice = st.builds(lambda words: " ".join(words),
                   st.lists(st.sampled_from(sorted({w for line in VALID for w in line.split()})),
                            min_size=1, max_size=7))
noise = st.text(alphabet=st.sampled_from(string.printable + "é\x00\u2028"), max_size=80)
other_line = st.one_of(grammar_line, grammar_line, splice, noise,
                       st.builds(lambda a, b: a + b, grammar_line, noise),
                       st.builds("-:{}".format, st.sampled_from(["ev", "g/", "g/a", "h/", "kprobes/"])))
# Half good lines, half the rest (one_of would flatten nested branches and pick evenly).
LINE = st.tuples(st.booleans(), good_line, other_line).map(lambda t: t[1] if t[0] else t[2])


# --- parse, in process --------------------------------------------------------------------------
def check_parse(line: str) -> Any:
    """``parse(line)``: a spec, or a ParseError with a known code and a caret in range."""
    try:
        spec = parse(line)
    except ParseError as err:
        assert err.code in ERRORS, err.code
        assert 0 <= err.column <= len(line) + 1, (err.column, len(line))
        assert err.errno == errno.EINVAL
        return None
    assert spec.kind in ("p", "r", "-")
    return spec


@budget(400)
@given(line=LINE)
def test_any_line_parses_or_raises_parse_error(line: str) -> None:
    check_parse(line)


# --- attach and run, in the sandbox's child --------------------------------------------------------
PROGRAM = ("fib.static", ["fib", "5"], 5, b"fib(5) = 5\n")


def attach_and_run(lines: list[str], clock: str, stack: bool, maxactive: int | None) -> dict[str, Any]:
    """Attach each line (``ParseError``, or ``ProbeError(ENOENT)`` for ``-:``, allowed), run the
    program, check its output and status, format every event, detach all; the counts."""
    from emu import Machine
    from emu._memory import PROT_X
    from probes import ProbeError, list_probes
    from probes.events import JsonSink, PerfettoSink, TextSink, attach, attached

    name, argv, status, stdout = PROGRAM
    m = Machine.from_elf(str(BIN_DIR / name), argv)
    m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
    code = [(r.start, m.read(r.start, r.end - r.start)) for r in m.mem.regions_in(0, 1 << 47)
            if r.perms & PROT_X and r.name != "[exit]"]
    text, js, perfetto = io.StringIO(), io.StringIO(), PerfettoSink()
    sinks: list[Any] = [TextSink(text), JsonSink(js), perfetto]
    events: list[Any] = []

    def sink(ev: Any) -> None:
        events.append(ev)
        for s in sinks:
            s(ev)

    outcomes = []
    for line in lines:
        try:
            attach(m, line, sink, clock=clock, maxactive=maxactive, stack=stack)
        except ParseError as err:
            assert err.code in ERRORS and 0 <= err.column <= len(line) + 1, (err.code, err.column)
            outcomes.append(err.code)
        except ProbeError as err:
            assert not isinstance(err, ParseError)
            assert line.split()[0].startswith("-") and err.errno == errno.ENOENT, (line, err)
            outcomes.append("ENOENT")
        else:
            outcomes.append("ok")
    got = m.run(max_insns=50_000_000, timeout=20)
    assert (got, m.stdout.getvalue()) == (status, stdout), (got, m.stdout.getvalue())
    perfetto.trace()
    for handle in attached(m):
        handle.detach()
    assert list_probes(m) == "", list_probes(m)
    for start, before in code:
        assert m.read(start, len(before)) == before, f"code at {start:#x} changed"
    return {"outcomes": outcomes, "events": len(events), "text": len(text.getvalue())}


def fuzz_warm_up() -> None:
    """In the sandbox's worker: fill the per-process symbol and CFI caches of the program."""
    if (BIN_DIR / PROGRAM[0]).exists():
        attach_and_run(["p fib n=%di", "r fib r=$retval"], "virtual", True, None)


@pytest.fixture(scope="module")
def program() -> str:
    return str(guest_bin() / PROGRAM[0])


def run_case(sandbox: Sandbox, lines: list[str], clock: str = "virtual", stack: bool = False,
             maxactive: int | None = None, known: tuple[KnownBug, ...] = ()) -> dict[str, Any]:
    result: dict[str, Any] = sandbox.check(attach_and_run, lines, clock, stack, maxactive, timeout=60,
                                           known=known)
    return result


def test_valid_lines_attach_and_trace(sandbox: Sandbox, program: str) -> None:
    """The baseline: the valid lines attach (``-:g/e`` detaches ``p:g/e``) and make events."""
    out = run_case(sandbox, VALID, stack=True)
    assert out["outcomes"] == ["ok"] * len(VALID), out
    assert out["events"] > 0


KNOWN_BUGS: tuple[KnownBug, ...] = ()


@budget(80)
@given(lines=st.lists(LINE, min_size=1, max_size=6), clock=st.sampled_from(["virtual", "host"]),
       stack=st.booleans(), maxactive=st.sampled_from([None, 1, 4096]))
def test_any_line_attaches_or_raises_parse_error(sandbox: Sandbox, program: str, lines: list[str],
                                                 clock: str, stack: bool, maxactive: int | None) -> None:
    try:
        run_case(sandbox, lines, clock, stack, maxactive, known=KNOWN_BUGS)
    except KnownBugHit:
        reject()


# --- native events against the Python path, in the sandbox's child ---------------------------------
def collect_events(lines: list[str], maxactive: int | None, native: bool) -> dict[str, Any]:
    """Attach the lines that attach with ``NATIVE_EVENTS = native``, run the program: its
    status and output, and each event's text and JSON."""
    import json

    from emu import Machine
    from probes import ProbeError
    from probes.events import _attach, attach, format_event

    name, argv, _, _ = PROGRAM
    m = Machine.from_elf(str(BIN_DIR / name), argv)
    m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
    events: list[tuple[str, str]] = []
    was, _attach.NATIVE_EVENTS = _attach.NATIVE_EVENTS, native
    try:
        for line in lines:
            try:
                attach(m, line, lambda ev: events.append((format_event(ev), json.dumps(ev.to_dict()))),
                       maxactive=maxactive)
            except ProbeError:          # ParseError too
                pass
        status = m.run(max_insns=50_000_000, timeout=20)
    finally:
        _attach.NATIVE_EVENTS = was
    return {"status": status, "stdout": m.stdout.getvalue(), "events": events}


@budget(60)
@given(lines=st.lists(good_line, min_size=1, max_size=4), maxactive=st.sampled_from([None, 1, 4096]))
def test_native_events_are_the_python_events(sandbox: Sandbox, program: str, lines: list[str],
                                             maxactive: int | None) -> None:
    """probes.events._native: the same events, text and JSON, as the Python path."""
    def run(native: bool) -> dict[str, Any]:
        out: dict[str, Any] = sandbox.check(collect_events, lines, maxactive, native, timeout=60)
        return out

    assert run(True) == run(False)


# Cases kept from the fuzzer's runs: (id, lines, the outcome of each, (mark, bug) while a bug
# makes them fail, else None). The fuzzer found no failure of the language; these pin
# what it met on the way.
REGRESSIONS: list[Any] = [
    ("delete-of-nothing-is-enoent", ["-:nosuch", "-:g/", "p fib", "-:kprobes/", "-:p_fib_0"],
     ["ENOENT", "ENOENT", "ok", "ok", "ENOENT"], None),
    ("same-probe-and-different-args", ["p:g/a fib n=%di", "p:g/a fib n=%di", "p:g/a main n=%si:u8"],
     ["ok", "SAME_PROBE", "DIFF_ARG_TYPE"], None),
    ("return-probe-off-entry-and-inside-an-insn", ["r fib+3", "p fib+1", "p 0x401001", "r 0x401000"],
     ["BAD_RETPROBE", "BAD_INSN_BNDRY", "BAD_INSN_BNDRY", "ok"], None),
    ("fetches-that-fault-print-fault", ["p fib a=+0(%ax):string b=+0(+0(%ax)):u64 c=@0x0:x8",
                                        "r:g/r fib d=+4096($retval):s32"], ["ok", "ok"], None),
    # make fuzz (issue 12's session): a return probe on the entry point hijacked argc.
    ("return-probe-on-the-entry-point-is-refused", ["p fib", "r _start", "p _start"],
     ["ok", "FAIL_REG_PROBE", "ok"], None),
]


@pytest.mark.parametrize("lines, outcomes, bug", [
    pytest.param(ls, out, o and o[1], id=n, marks=o[0] if o else ()) for n, ls, out, o in REGRESSIONS])
def test_regressions(sandbox: Sandbox, program: str, lines: list[str], outcomes: list[str],
                     bug: KnownBug | None) -> None:
    assert run_case(sandbox, lines, known=(bug,) if bug else ())["outcomes"] == outcomes
