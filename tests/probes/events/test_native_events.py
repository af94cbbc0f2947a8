"""The native event path against the Python one: the same events, hit for hit.

When the native core is built, a line whose fetch arguments compile runs them in C at the
hit and writes a record to a ring; Python drains the ring (at every syscall, when the
engine stops, when the ring is full, before a Python-path event, on ``flush``) into the
same :class:`Event` objects. ``_attach.NATIVE_EVENTS = False`` forces the Python path,
which stays the reference. Every test runs one guest with the same lines twice, the
reference run and the native one, and requires (differentially, no hand-written values):

- the same events in the same order: ``format_event`` text, ``to_dict`` (its JSON and
  its value types too), ``entry_ts`` and ``stack``; ts is the virtual clock, so it
  is equal too, except with ``clock="host"``, where ts only has to be monotonic;
- the same handle counters (hits, missed, events, entries) and the same guest outcome;
- every event delivered by the time the run (``run``, ``call``, ``run_tasks``) returns:
  a ``flush`` afterwards adds none;
- ``handle.native`` on the native run for every line but those reading ``@SYM`` (Python's
  symbol lookup) when the core is built (``probes._cnative.NATIVE``), and never with
  ``KPE_NATIVE=0`` or on the reference run (:func:`expected_native`; a test may leave
  a line's path open, as for ``$entry(...)`` around a whole string).

Guests: ``SOURCE`` below (one call site with eight arguments, strings, a NULL and an
unmapped pointer), guest/fib.s (recursion, tasks of a seeded scheduler) and the C guests
of guest/c (fib, parse, threads, pool, fileops, procs).
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import guest
import probes.events
from emu import Machine
from probes import set_optimization
from probes._cnative import NATIVE
from probes.events import Event, EventHandle, _attach, attach, format_event
from tests.guests import guest_bin as _guest_bin

pytestmark = pytest.mark.skipif(
    not hasattr(_attach, "NATIVE_EVENTS"),
    reason="probes.events._attach has no NATIVE_EVENTS switch yet (the native event path "
           "has not landed)")


def _bytes(data: bytes) -> str:
    return ".byte " + ", ".join(str(b) for b in data)


# driver() calls target(i, -i, pointers[i], words, 0x8899aabbccddeeff, i << 4, i, 8) for
# i = 0..4 (the last two on the stack). target returns i - 2i = -i, clobbers rdi and bumps
# greeting[0], so a return sees other values than the entry. pointers[] is greeting,
# other (invalid UTF-8), NULL, an unmapped address and table: strings, faults, binary.
SOURCE = f"""
target:
    push rbp
    mov rbp, rsp
    lea rax, [rdi + rsi*2]
    mov rdi, 99
    inc byte ptr [rip + greeting]
    pop rbp
    ret
driver:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    xor ebx, ebx
driver_next:
    push 8
    push rbx
    mov rdi, rbx
    mov rsi, rbx
    neg rsi
    lea r12, [rip + pointers]
    mov rdx, [r12 + rbx*8]
    lea rcx, [rip + words]
    movabs r8, 0x8899aabbccddeeff
    mov r9, rbx
    shl r9, 4
    call target
    add rsp, 16
    inc rbx
    cmp rbx, 5
    jl driver_next
    pop r12
    pop rbx
    pop rbp
    ret
greeting:
    {_bytes(b"hello" + bytes(3))}
other:
    {_bytes("wörld".encode() + bytes([0xFF, 0, 0]))}
table:
    .quad greeting
    .quad other
    .quad 0x8899aabbccddeeff
    .quad 0
pointers:
    .quad greeting
    .quad other
    .quad 0
    .quad 0xdead0000
    .quad table
words:
    .quad greeting
    .quad other
    .quad 0
"""

# One kprobe line per family of fetch arguments (at target's entry, a function-entry probe).
KPROBE_LINES = {
    "registers": "p:t/regs target di=%di si=%si ax=%ax sp=%sp ip=%ip fl=%flags r8=%r8 c=%cx:x32",
    "args": "p:t/args target " + " ".join(f"a{n}=$arg{n}" for n in range(1, 9)),
    "stack": r"p:t/stack target s0=$stack0 s1=$stack1 s2=$stack2 s3=$stack3 st=$stack "
             r"imm=\123 neg=\-5:s16 big=\0x1ff:u8",
    "derefs": "p:t/deref target s=+0(%dx):u64 w=+0(+0(%cx)):u32 v=+8(+0(%si)):x64 "
              "below=-8(%sp) up=+16(%sp):s64 nest=+1(+8(%cx)):x16",
    "unsigned-signed": "p:t/us target a=%r8:u8 b=%r8:u16 c=%r8:u32 d=%r8:u64 e=%si:s8 "
                       "f=%si:s16 g=%r8:s32 h=%si:s64",
    "hex-char-symbol": "p:t/xcs target a=%si:x8 b=%si:x16 c=%si:x32 d=%si:x64 ch=+0(%dx):char "
                       "ret=$stack0:symbol p=%dx:symbol n=\\16:symbol",
    "bitfields": "p:t/bits target a=+0(%dx):b4@2/8 b=%r8:b12@20/32 c=%si:b1@63/64 "
                 "d=+0(%dx):b3@0/8[3] e=+0(%dx):b16@8/32",
    "arrays": "p:t/arrays target a=+0(%dx):u8[4] b=+0(%dx):x32[3] c=+0(%cx):string[3] "
              "d=+0(%dx):s16[2] e=+0(%cx):x64[2] ch=+0(%dx):char[5]",
    "strings": r'p:t/strings target s=+0(%dx):string t=+1(%dx):string c=$comm k=\"text" '
               r'u=+0(+8(%cx)):string f=\0xdead0000:string z=+0(\0):u64 e=\"" C=$COMM:string',
    "symstr": "p:t/symstr target s=%dx:symstr r=$stack0:symstr n=+0(%dx):symstr",
    "default-names": "p target %di +0(%dx):string $arg3:symbol",
}

# Return probe lines on target: $retval by type, the entry's values, $duration.
KRETPROBE_LINES = {
    "retval": "r:t/ret target ret=$retval rs=$retval:s64 r8=$retval:s8 ru=$retval:u32 "
              "rx=$retval:x16 rb=$retval:b4@4/8",
    "entry-args": "r:t/args target a1=$arg1 a2=$arg2:s64 a3=$arg3:symbol a7=$arg7 a8=$arg8 di=%di",
    "entry-strings": "r:t/str target was=+0($arg3):string now=+0(%cx):string[2] c=$comm",
    "entry-fetch": "r:t/entry target now=+0($entry(%dx)):string e=$entry(%di):s32 "
                   "es=$entry(%sp) b=$entry(+0(%dx)):u8 sp=%sp",
    "duration": "r:t/dur target d=$duration:u64 dx=$duration n=$arg1:s64",
    "default-names": "r target $retval $arg1",
}

# loop(n) calls leaf(i, text) for i = n-1..0; text is 5,000 letters, then a NUL.
LONG_STRINGS = f"""
leaf:
    mov rax, rdi
    ret
loop:
    push rbx
    mov rbx, rdi
loop_next:
    dec rbx
    mov rdi, rbx
    lea rsi, [rip + text]
    call leaf
    test rbx, rbx
    jnz loop_next
    pop rbx
    ret
text:
    {_bytes(bytes(65 + i % 26 for i in range(5000)) + bytes(8))}
"""

FIB_LINES = ["p:fibs/enter fib n=%di:s64 sp=%sp", "r64:fibs/leave fib n=$arg1:s64 ret=$retval:s64 "
             "d=$duration:u64 e=$entry(%sp)"]


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


# --- running one guest twice ----------------------------------------------------------------------
class Trace(NamedTuple):
    """What one run produced: per event its text, its dict and the rest (entry_ts, stack,
    the dict as JSON, what ``observe`` saw at the sink call); the handles; what
    ``drive`` returned."""

    texts: list[str]
    dicts: list[dict[str, Any]]
    rest: list[tuple[Any, ...]]
    handles: list[EventHandle]
    result: Any


Make = Callable[[], Machine]
Drive = Callable[[Machine, list[Event]], Any]


def trace(make: Make, lines: list[str], drive: Drive, *, native: bool,
          observe: Callable[[Machine], Any] | None = None, **attach_kw: Any) -> Trace:
    """Attach ``lines`` to a new machine with NATIVE_EVENTS = ``native``, ``drive`` it,
    and collect every event. The run must leave nothing in the ring: the engine's stop
    drains it, so a ``flush`` afterwards adds no event."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_attach, "NATIVE_EVENTS", native)
        m = make()
        events: list[Event] = []
        observed: list[Any] = []

        def sink(ev: Event) -> None:
            events.append(ev)
            observed.append(observe(m) if observe is not None else None)

        handles = [attach(m, line, sink, **attach_kw) for line in lines]
        result = drive(m, events)
        delivered = len(events)
        probes.events.flush(m)
        assert len(events) == delivered, "events were still in the ring after the run returned"
    dicts = [ev.to_dict() for ev in events]
    rest = [(ev.entry_ts, ev.stack, json.dumps(d), seen)
            for ev, d, seen in zip(events, dicts, observed, strict=True)]
    return Trace([format_event(ev) for ev in events], dicts, rest, handles, result)


def _counters(h: EventHandle) -> tuple[str, int, int, int, int]:
    return (h.name, h.hits, h.missed, h.events, h.entries)


_SYMBOL_FETCH = re.compile(r"(^|[=(])@[A-Za-z_]")


def expected_native(line: str, attach_kw: dict[str, Any]) -> bool | None:
    """Whether ``line`` should run natively when the core is built: every line but one
    with an ``@SYM`` fetch (Python resolves the symbol); None: either is right (``stack``,
    which unwinds at the hit)."""
    if attach_kw.get("stack"):
        return None
    return not any(_SYMBOL_FETCH.search(arg) for arg in line.split()[2:])


_TS = re.compile(r"\s\d+\.\d{6}: ")


def _without_ts(t: Trace) -> Trace:
    """The trace with every clock reading blanked (the host clock differs between runs),
    what ``observe`` saw included."""
    texts = [_TS.sub(" <ts>: ", text, count=1) for text in t.texts]
    dicts = [{**d, "ts": None} for d in t.dicts]
    rest = [(None, stack, json.dumps(d)) for (_, stack, *_), d in zip(t.rest, dicts, strict=True)]
    return t._replace(texts=texts, dicts=dicts, rest=rest)


def assert_same_events(make: Make, lines: list[str], drive: Drive, *, host_clock: bool = False,
                       observe: Callable[[Machine], Any] | None = None,
                       native: list[bool | None] | None = None, **attach_kw: Any) -> Trace:
    """Run the reference (Python path) and the native path; require the same events,
    counters and outcome, and ``handle.native`` where the line should be native
    (``native``: per line, instead of :func:`expected_native`; None: either).
    Returns the native run's trace."""
    if host_clock:
        attach_kw["clock"] = "host"
    ref = trace(make, lines, drive, native=False, observe=observe, **attach_kw)
    got = trace(make, lines, drive, native=True, observe=observe, **attach_kw)
    assert ref.texts, "the reference run made no event: the test would pin nothing"
    assert not any(h.native for h in ref.handles), "NATIVE_EVENTS=False must keep every line in Python"
    cmp_ref, cmp_got = (_without_ts(ref), _without_ts(got)) if host_clock else (ref, got)
    assert len(got.texts) == len(ref.texts)
    for i, (a, b) in enumerate(zip(cmp_got.texts, cmp_ref.texts, strict=True)):
        assert a == b, f"event {i} differs (native, then Python)"
    assert cmp_got.dicts == cmp_ref.dicts
    assert cmp_got.rest == cmp_ref.rest
    assert [_counters(h) for h in got.handles] == [_counters(h) for h in ref.handles]
    assert got.result == ref.result
    wants = native or [expected_native(line, attach_kw) for line in lines]
    for line, h, want in zip(lines, got.handles, wants, strict=True):
        if NATIVE is None:
            assert h.native is False, f"KPE_NATIVE=0, yet native: {line}"
        elif want is not None:
            assert h.native is want, f"expected native={want}: {line}"
    return got


# --- machines and drivers -------------------------------------------------------------------------
def asm(source: str, optimized: bool = False) -> Make:
    def make() -> Machine:
        m = Machine.from_asm(source)
        set_optimization(m, optimized)
        return m
    return make


def fib_asm(optimized: bool = False) -> Make:
    def make() -> Machine:
        m = guest.load("fib")
        set_optimization(m, optimized)
        return m
    return make


def tasks(*calls: tuple[Any, ...], seed: int = 0, timeslice: int = 1000) -> Drive:
    """Spawn one task per ``(func, *args)`` and run them (the virtual clock runs)."""
    def drive(m: Machine, events: list[Event]) -> Any:
        spawned = [m.spawn(func, *args, name=f"{func}{i}") for i, (func, *args) in enumerate(calls)]
        m.run_tasks(seed=seed, timeslice=timeslice)
        return [t.result for t in spawned]
    return drive


def elf(binary: Path, *args: str, seed: int = 0, timeslice: int = 1000, **kw: Any) -> Make:
    def make() -> Machine:
        m = Machine.from_elf(str(binary), [binary.name, *args], seed=seed, timeslice=timeslice, **kw)
        m.stdout = io.BytesIO()
        return m
    return make


def run_program(m: Machine, events: list[Event]) -> tuple[int, bytes]:
    return m.run(), m.stdout.getvalue()


# --- kprobe fetches -------------------------------------------------------------------------------
@pytest.mark.parametrize("optimized", [False, True], ids=["int3", "optimized"])
@pytest.mark.parametrize("line", KPROBE_LINES.values(), ids=KPROBE_LINES.keys())
def test_kprobe_fetch_arguments(line: str, optimized: bool) -> None:
    """Each family of fetch arguments gives the same values and texts natively: registers,
    $argN (7 and 8 from the stack), $stackN, immediates, derefs (nested, negative), every
    type, bitfields, arrays, strings and string arrays, $comm, constants, symstr, and
    faults (NULL, unmapped) as None."""
    assert_same_events(asm(SOURCE, optimized), [line], tasks(("driver",)))


def test_every_kprobe_line_on_one_function() -> None:
    """All the lines on one probe point: their events interleave per hit in attach order."""
    assert_same_events(asm(SOURCE), list(KPROBE_LINES.values()), tasks(("driver",)))


def test_kprobe_inside_a_function() -> None:
    """A probe at an offset (not a function entry): registers, derefs, the stack."""
    assert_same_events(asm(SOURCE), ["p:t/mid target+4 ax=%ax:s64 s=+0(%dx):string "
                                     "up=+8(%sp):symbol st=$stack1"], tasks(("driver",)))


# --- return probes -------------------------------------------------------------------------------
@pytest.mark.parametrize("optimized", [False, True], ids=["int3", "optimized"])
@pytest.mark.parametrize("line", KRETPROBE_LINES.values(), ids=KRETPROBE_LINES.keys())
def test_kretprobe_fetch_arguments(line: str, optimized: bool) -> None:
    """$retval by type, $argN and $entry(...) as captured at that call's entry, strings
    read at the entry or the return, $duration, the caller text."""
    assert_same_events(asm(SOURCE, optimized), [line], tasks(("driver",)))


def test_a_string_taken_at_entry() -> None:
    """``$entry(...)`` around a whole string argument: the string as it was at entry
    (greeting before target bumps it), natively or not, the same events."""
    assert_same_events(asm(SOURCE), ["r:t/was target was=$entry(+0(%dx)):string "
                                     "now=+0($arg3):string"], tasks(("driver",)), native=[None])


@pytest.mark.parametrize("optimized", [False, True], ids=["int3", "optimized"])
def test_recursion(optimized: bool) -> None:
    """Entries and returns of fib(12) interleave as on the Python path; each return is
    its own call's ($arg1, $entry, $duration), ts is the same virtual clock."""
    assert_same_events(fib_asm(optimized), FIB_LINES, tasks(("fib", 12)))


def test_recursion_in_an_elf_program(guest_bin: Path) -> None:
    """fib.static 6 9: main's printf between the two recursions, the exit's write after."""
    assert_same_events(elf(guest_bin / "fib.static", "6", "9"),
                       ["p fib n=%di:s64", "r fib n=$arg1:s64 ret=$retval:s64 d=$duration:u64",
                        "r main ret=$retval:s32 argc=$arg1:u32 argv=+0($arg2):string[3]"],
                       run_program)


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_tasks_of_a_seeded_scheduler(seed: int) -> None:
    """Three fib tasks cut into short slices: switches land inside the recursion, the
    native path must neither move them (hits end slices) nor mix the tasks' returns."""
    got = assert_same_events(fib_asm(), FIB_LINES, tasks(("fib", 8), ("fib", 9), ("fib", 7),
                                                         seed=seed, timeslice=40))
    tids = [d["tid"] for d in got.dicts]
    assert sum(a != b for a, b in zip(tids, tids[1:], strict=False)) > 3   # really interleaved


@pytest.mark.parametrize("seed", [0, 5])
def test_threads_of_a_worker_pool(guest_bin: Path, seed: int) -> None:
    """pool.static 3 6 6: fib on three threads, futex syscalls between hits, switches
    inside the recursion; thread ids, pairing and order as on the Python path."""
    got = assert_same_events(elf(guest_bin / "pool.static", "3", "6", "6", seed=seed, timeslice=300),
                             ["p fib n=%di:s64", "r fib n=$arg1:s64 ret=$retval:s64 d=$duration:u64",
                              "p:q/take queue_take w=%di:s64 c=$comm"],
                             run_program, maxactive=256)
    assert len({d["tid"] for d in got.dicts}) >= 3


def test_threads_join(guest_bin: Path) -> None:
    """threads.static join 3: three calls in flight at once on three threads."""
    assert_same_events(elf(guest_bin / "threads.static", "join", "3"),
                       ["p:t/enter fib_thread n=%di:s64", "r:t/leave fib_thread n=$arg1:s64 "
                        "ret=$retval:s64 d=$duration:u64"], run_program)


def test_small_maxactive_misses_the_same_calls() -> None:
    """r2 on fib(9): only two calls in flight get an instance; the same ones are missed
    and the handle's counters agree."""
    got = assert_same_events(fib_asm(), ["r2:fibs/ret2 fib n=$arg1:s64 ret=$retval:s64",
                                         "p:fibs/enter fib n=%di:s64"], tasks(("fib", 9)))
    assert got.handles[0].missed > 0


def test_attach_maxactive_misses_the_same_calls() -> None:
    """attach(maxactive=1) with an ``r`` line: the same misses."""
    got = assert_same_events(fib_asm(), ["r:fibs/ret fib n=$arg1:s64 d=$duration"],
                             tasks(("fib", 8)), maxactive=1)
    assert got.handles[0].missed > 0


# --- order: syscalls, mixed paths, several lines -----------------------------------------------
def test_events_keep_their_place_among_syscalls(guest_bin: Path) -> None:
    """fileops memfd: each result() call prints a line (line-buffered stdout, a write per
    line) around other syscalls. The events are the same, and each reached the sink with
    as much guest output written as on the Python path: a syscall drains the ring before
    it runs."""
    got = assert_same_events(elf(guest_bin / "fileops.static", "memfd"),
                             ["p result what=+0(%di):string ret=%si:s64",
                              "r result what=+0($arg1):string"],
                             run_program, observe=lambda m: len(m.stdout.getvalue()))
    assert len({seen for *_, seen in got.rest}) > 5


def test_two_native_lines_on_one_function() -> None:
    """Two lines on target's entry and two on its return: per hit in attach order."""
    assert_same_events(asm(SOURCE), [KPROBE_LINES["args"], KRETPROBE_LINES["retval"],
                                     KPROBE_LINES["strings"], KRETPROBE_LINES["entry-fetch"]],
                       tasks(("driver",)))


def test_native_and_python_lines_interleave() -> None:
    """A line reading @SYM stays in Python; on the same function as native lines, its
    events come exactly where the Python path puts them (a Python event drains first)."""
    lines = ["p:a/native target n=%di s=+0(%dx):string",
             "p:a/python target g=@greeting:string t=+8(@table):x64 n=%di",
             "r:a/back target ret=$retval:s64",
             "r:a/pyback target g=@greeting:string ret=$retval:s64"]
    got = assert_same_events(asm(SOURCE), lines, tasks(("driver",)))
    if NATIVE is not None:
        assert [h.native for h in got.handles] == [True, False, True, False]


def test_native_and_python_lines_on_recursion() -> None:
    """The same on fib under recursion: the Python line's events between native ones."""
    assert_same_events(fib_asm(), ["p:f/n fib n=%di:s64", "p:f/py fib code=@fib:x32 n=%di:s64",
                                   "r64:f/r fib ret=$retval:s64", "p:f/mid fib+4 sp=%sp"],
                       tasks(("fib", 10)))


# --- when the ring is drained ---------------------------------------------------------------------
def test_events_are_delivered_by_the_end_of_each_call() -> None:
    """``m.call`` with no syscall: every event of a call is in the sink when call returns
    (the engine's stop drains), not only at the next one."""
    def calls(m: Machine, events: list[Event]) -> list[tuple[int, int]]:
        return [(m.call("driver"), len(events)) for _ in range(3)]
    got = assert_same_events(asm(SOURCE), [KPROBE_LINES["derefs"], KRETPROBE_LINES["entry-args"]],
                             calls)
    assert got.result[0][1] == 10


def test_many_events_between_stops() -> None:
    """fib_loop(13, 10): 15,000 events of four numbers each (1.5 MB of records, more
    than a 1 MiB ring) in one run without a syscall; none lost, none reordered."""
    assert_same_events(fib_asm(), ["p:f/e fib n=%di:s64 sp=%sp ip=%ip:symbol k=$arg2 c=$comm",
                                   "r64:f/r fib ret=$retval:s64 n=$arg1 d=$duration sp=%sp"],
                       tasks(("fib_loop", 13, 10)))


def test_long_strings_fill_the_ring() -> None:
    """1,000 calls each fetching a 5,000-byte string (cut at 4,095 bytes, as the kernel
    cuts at MAX_STRING_SIZE) and a 4,000-byte one, twice: megabytes of records, in order."""
    assert_same_events(asm(LONG_STRINGS), ["p:l/leaf leaf i=%di s=+0(%si):string t=+1000(%si):string",
                                           "r:l/back leaf ret=$retval s=+0($arg2):string"],
                       tasks(("loop", 1000)))


# --- clocks, options, processes -------------------------------------------------------------------
def test_host_clock(guest_bin: Path) -> None:
    """clock="host": the events agree but for ts, which is the host's monotonic clock
    taken at the hit: non-decreasing, within the run, never later than the sink call."""
    def timed(m: Machine, events: list[Event]) -> tuple[int, bytes]:
        times.append(time.monotonic_ns())
        done = run_program(m, events)
        times.append(time.monotonic_ns())
        return done
    times: list[int] = []
    got = assert_same_events(elf(guest_bin / "fib.static", "8"),
                             ["p fib n=%di:s64", "r fib n=$arg1:s64 ret=$retval:s64"], timed,
                             host_clock=True, observe=lambda m: time.monotonic_ns())
    stamps = [d["ts"] for d in got.dicts]
    assert stamps == sorted(stamps)
    assert times[-2] <= stamps[0] and stamps[-1] <= times[-1]
    assert all(d["ts"] <= seen for d, (*_, seen) in zip(got.dicts, got.rest, strict=True))


def test_string_arrays_and_comm_on_an_elf_program(guest_bin: Path) -> None:
    """parse.static: main's argv as string[N] (a NULL entry faults), parse_port's string
    through the types, comm "parse.static" on both paths."""
    assert_same_events(elf(guest_bin / "parse.static", "80", "http", "", "70000"), [
        "p main argc=%di:u32 argv=+0(%si):string[6] a0=+0(+8(%si)):string",
        "p:pp parse_port s=+0(%di):string c=$comm a=+0(%di):u8[3] ch=+0(%di):char "
        "hi=+0(%di):b4@4/8 ip=%ip:symbol",
        "r:pp/ret parse_port s=+0($arg1):string ret=$retval:s64"], run_program)


def test_stack_option() -> None:
    """stack=True: the same return addresses per event, whichever path the line takes."""
    assert_same_events(fib_asm(), FIB_LINES, tasks(("fib", 7)), stack=True)


def test_events_of_a_forked_child(guest_bin: Path) -> None:
    """procs.static fork: the child's copy of the probe hits on the child's machine; its
    events carry the child's pid and come in the Python path's order."""
    got = assert_same_events(elf(guest_bin / "procs.static", "fork", fs_root=str(guest_bin)),
                             ["p printf fmt=+0(%di):string", "r printf ret=$retval:s32"],
                             run_program)
    assert len({d["pid"] for d in got.dicts}) == 2


def test_pending_object_symbol(guest_bin: Path) -> None:
    """fib.dyn: a line on libc.so.6:malloc waits for libc, then hits natively."""
    assert_same_events(elf(guest_bin / "fib.dyn", "5"),
                       ["p libc.so.6:malloc size=%di:u64", "r libc.so.6:malloc ret=$retval:x64 "
                        "size=$arg1:u64"], run_program, native=[None, None])
