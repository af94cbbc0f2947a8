"""The native event path's own parts: which lines compile, the ring, and the shapes
the differential suite (test_native_events.py) does not reach: a machine without
the live register block, a Python handler on the same site (the hit path with
the GIL), a sink that raises, ``flush`` in the middle of a run.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

import guest
from emu import Machine
from probes import Kprobe, register_kprobe
from probes._cnative import NATIVE
from probes.events import Event, _attach, attach, compile_arg, flush, format_event, parse
from probes.events._native import compile_line

needs_native = pytest.mark.skipif(NATIVE is None, reason="the native core is not built or is off")


def _compiled(line: str) -> Any:
    spec = parse(line)
    return compile_line([compile_arg(a, spec.kind) for a in spec.args], spec.kind)


@pytest.mark.parametrize("line", [
    "p:a fib n=%di:s32 s=+8(%sp):x16 c=$comm t=\\\"text\" b=+0(%si):b3@2/8",
    "r:b fib ret=$retval:s64 n=$arg1 d=$duration e=$entry(%di):s8 w=+0($entry(%sp)):u64",
    "p:c fib a=$arg7 s=$stack2 imm=\\7 str=+0(%di):string arr=+0(%si):u8[4]",
])
def test_lines_that_compile(line: str) -> None:
    c = _compiled(line)
    assert c is not None and len(c.args) == len(parse(line).args)


@pytest.mark.parametrize("line", [
    "p:a fib s=@fib",                              # a symbol: looked up at each hit
    "r:b fib w=$entry(+0(%di)):string",            # a string taken at entry: too big for ri.data
    "r:c fib w=$entry(+0(%di)):u8[2]",             # an array taken at entry
    "r:d fib " + " ".join(f"a{i}=$entry(%di)" for i in range(17)),   # 17 values at entry
])
def test_lines_that_keep_the_python_path(line: str) -> None:
    assert _compiled(line) is None


@needs_native
def test_lines_whose_records_could_pass_a_quarter_of_the_ring_keep_the_python_path() -> None:
    m = guest.load("fib")
    assert attach(m, "p:a fib s=+0(%si):string[63]", lambda ev: None).native      # 258,592 bytes
    assert not attach(m, "p:b fib s=+0(%si):string[64]", lambda ev: None).native  # 262,696 > 1 MiB / 4


def _events(m: Machine, lines: list[str], run: Any, native: bool) -> list[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_attach, "NATIVE_EVENTS", native)
        out: list[Event] = []
        handles = [attach(m, line, out.append) for line in lines]
        run(m)
        assert all(h.native == (native and NATIVE is not None) for h in handles)
        return [format_event(ev) for ev in out]


LINES = ["p:e fib n=%di:s32 sp=+0(%sp):x64", "r:r fib ret=$retval:s32 n=$arg1 d=$duration"]


def _spawn_fib(m: Machine) -> None:
    m.spawn("fib", 9)
    m.spawn("fib", 7)
    m.run_tasks(seed=4, timeslice=300)


@needs_native
def test_a_machine_without_the_live_register_block() -> None:
    """Handlers get Python pt_regs there: the Trace runs as an ordinary handler."""
    got = _events(guest.load("fib", fast_registers=False), LINES, _spawn_fib, True)
    want = _events(guest.load("fib"), LINES, _spawn_fib, False)
    assert got == want and len(got) > 100


@needs_native
def test_a_python_handler_on_the_same_site() -> None:
    """A Python pre_handler at the site takes the hit path with the GIL; one that
    changes a register before the event's handler runs shows it changed, as in Python."""
    def both(native: bool) -> list[str]:
        m = guest.load("fib")

        def pre(kp: Kprobe, regs: Any) -> int:
            if regs.rdi == 3:
                regs.rsi = 0x33            # fib ignores rsi; the event reads it
            return 0
        register_kprobe(m, Kprobe("fib", pre_handler=pre))
        return _events(m, ["p:e fib n=%di:s32 si=%si"], lambda m: m.call("fib", 8), native)

    got = both(True)
    assert got == both(False) and any("si=0x33" in line for line in got)


@needs_native
def test_a_raising_sink_stops_the_run() -> None:
    """The drain calls the sink: its exception stops the run, as a handler's does
    (at the drain, not at the hit)."""
    m = guest.load("fib")
    got: list[Event] = []

    def sink(ev: Event) -> None:
        if not got:
            got.append(ev)
            raise OSError("broken pipe")
        got.append(ev)
    h = attach(m, "p:e fib n=%di", sink)
    assert h.native
    with pytest.raises(OSError, match="broken pipe"):
        m.call("fib", 5)
    assert m.call("fib", 6) == 8 and len(got) == 1 + 25     # the machine goes on


@needs_native
def test_flush_delivers_at_once() -> None:
    """Mid-run, the events so far are in the ring until a flush (here from a
    Python handler on another function, at each call of it)."""
    m = Machine.from_asm("""
    leaf:
        ret
    mark:
        ret
    main:
        call leaf
        call leaf
        call mark
        call leaf
        call mark
        ret
    """)
    seen: list[int] = []
    events: list[Event] = []
    h = attach(m, "p:leaf leaf", events.append)

    def at_mark(kp: Kprobe, regs: Any) -> int:
        seen.append(len(events))
        flush(m)
        seen.append(len(events))
        return 0
    register_kprobe(m, Kprobe("mark", pre_handler=at_mark))
    m.call("main")
    assert h.native and seen == [0, 2, 2, 3] and len(events) == 3


@needs_native
def test_ring_and_trace_check_their_arguments() -> None:
    with pytest.raises(ValueError):
        NATIVE.Ring(100, lambda: None, None)            # too small
    ring = NATIVE.Ring(4096, lambda: None, None)
    assert ring.take() == (b"", []) and ring.pending == 0
    ok = struct.pack("<8q", 1, 7, 0, 0, 8, 0, 0, 0)     # %di, RAW u64
    assert NATIVE.Trace(ring, 0, True, ok, 1, b"", 0).max_record == 40 + 16   # head, (ok, value)
    for code, nargs in ((ok[:-8], 1), (ok, 2), (struct.pack("<8q", 1, 99, 0, 0, 8, 0, 0, 0), 1),
                        (struct.pack("<8q", 99, 0, 0, 0, 8, 0, 0, 0), 1), (b"\0" * 3, 0)):
        with pytest.raises(ValueError):
            NATIVE.Trace(ring, 0, True, code, nargs, b"", 0)
    string2 = struct.pack("<8q", 1, 7, 0, 2, 1, 2, 0, 0)   # +0(%di):string[2]
    big = NATIVE.Ring(1 << 20, lambda: None, None)
    assert NATIVE.Trace(big, 0, True, string2, 1, b"", 0).max_record == 40 + 2 * (8 + 4096)
    with pytest.raises(ValueError):                      # records larger than half the ring
        NATIVE.Trace(ring, 0, True, string2, 1, b"", 0)
