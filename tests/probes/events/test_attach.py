"""``probes.events.attach``: a ``kprobe_events`` line on a machine, one :class:`Event` per hit.

Rules pinned (the tracing issue's contract, kernel/trace/trace_kprobe.c):
- an event carries ``ts`` (ns), ``tid``, ``comm``, ``cpu`` (0), ``group``, ``name``,
  ``kind`` (``p``/``r``), ``ip`` (``sym+0xoff``; a return probe: the probed function),
  ``caller`` (a return probe: the ``sym+0xoff`` returned to) and ``args`` (ints as ints,
  strings as str, arrays as lists);
- the virtual clock is guest instructions retired, 1 ns each, exact at every hit;
- on a return probe ``$argN`` and ``$entry(...)`` are that call's values at entry and
  ``$duration`` the time from that call's entry to its return, right under recursion and
  threads;
- ``-:[GRP/]EVENT`` detaches (``dyn_event_release``: every matching event); ``detach()``
  leaves guest memory as it was;
- registration errors are the kernel's error_log codes at the kernel's caret;
- ``OBJECT:SYM`` waits for the object; threads get their own tid and the process's comm.

The expected values are computed independently: from the guest's source (guest/fib.s,
guest/c/*.c), the Fibonacci call tree, or the guest's own bytes.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from pathlib import Path

import pytest

import guest
from emu import GuestFault, Machine
from probes import ProbeError
from probes.events import Event, EventHandle, ParseError, attach, attached, format_event
from tests.conftest import EVENT_FIELDS, fib, postorder, preorder
from tests.guests import guest_bin as _guest_bin


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


# --- the Fibonacci call tree, independently ---------------------------------------------------
def entry_clock(n: int, t: int = 0) -> tuple[list[int], int]:
    """Instructions retired at each call's entry, and at its return, counted from
    guest/fib.s: 9 instructions from fib's entry to the first ``call fib``; a leaf
    (n < 2) is 12 instructions through its ``ret``; 3 between the first call's return
    and the second ``call``; 6 after the second call returns, its ``ret`` included."""
    if n < 2:
        return [t], t + 12
    first, t1 = entry_clock(n - 1, t + 9)
    second, t2 = entry_clock(n - 2, t1 + 3)
    return [t, *first, *second], t2 + 6


# --- running ----------------------------------------------------------------------------------
def run_asm(lines: list[str], n: int, *, name: str = "fibtask", **kw: object
            ) -> tuple[Machine, list[Event], list[EventHandle]]:
    """Attach ``lines`` to the assembled fib and run ``fib(n)`` as a scheduled task."""
    m = guest.load("fib")
    events: list[Event] = []
    handles = [attach(m, line, events.append, **kw) for line in lines]  # type: ignore[arg-type]
    task = m.spawn("fib", n, name=name)
    m.run_tasks()
    assert task.result == fib(n)
    return m, events, handles


def depths(n: int, d: int = 1) -> list[int]:
    """The depth of each call of fib(n) in entry order (1: the outermost)."""
    return [d] if n < 2 else [d, *depths(n - 1, d + 1), *depths(n - 2, d + 1)]


def load_elf(binary: Path, *args: str) -> Machine:
    m = Machine.from_elf(str(binary), [binary.name, *args])
    m.stdout = io.BytesIO()
    return m


def run_elf(binary: Path, args: list[str], lines: list[str], **kw: object
            ) -> tuple[Machine, int, list[Event], list[EventHandle]]:
    m = load_elf(binary, *args)
    events: list[Event] = []
    handles = [attach(m, line, events.append, **kw) for line in lines]  # type: ignore[arg-type]
    status = m.run()
    return m, status, events, handles


def pair_calls(events: list[Event]) -> list[tuple[Event, Event]]:
    """(entry event, return event) of each call: per thread, a return closes the latest
    open entry (calls nest on one thread's stack)."""
    open_calls: dict[int, list[Event]] = {}
    pairs = []
    for ev in events:
        if ev.kind == "p":
            open_calls.setdefault(ev.tid, []).append(ev)
        else:
            pairs.append((open_calls[ev.tid].pop(), ev))
    assert not any(open_calls.values()), "entries without a return"
    return pairs


def return_sites(m: Machine, caller: str, callee: str) -> list[str]:
    """``caller+0xOFF`` after each ``call callee`` (E8 rel32) in the caller's bytes."""
    sym, target = m.symbols.get_symbol(caller), m.symbols.get_symbol(callee)
    assert sym is not None and target is not None
    code = m.read(sym.addr, sym.size)
    sites = []
    for i in range(len(code) - 4):
        rel = int.from_bytes(code[i + 1:i + 5], "little", signed=True)
        if code[i] == 0xE8 and sym.addr + i + 5 + rel == target.addr:
            sites.append(f"{caller}+{i + 5:#x}")
    return sites


# --- the fields of an event ---------------------------------------------------------------------
def test_kprobe_event_fields() -> None:
    """A kprobe event: the task's tid and comm, cpu 0, the line's group and name, kind
    "p", ip at the probe, no caller, args by name; one event per call, in entry order."""
    m, events, _ = run_asm(["p:fibs/enter fib n=%di:s64"], 4)
    (task,) = m.tasks[1:]                      # tasks[0]: the machine's own
    assert [ev.args for ev in events] == [{"n": n} for n in preorder(4)]
    for ev in events:
        assert list(ev.to_dict()) == EVENT_FIELDS
        assert (ev.tid, ev.comm, ev.cpu, ev.group, ev.name, ev.kind, ev.ip, ev.caller) == \
            (task.tid, "fibtask", 0, "fibs", "enter", "p", "fib+0x0", None)


def test_virtual_clock_counts_instructions() -> None:
    """--clock virtual: ts is the count of guest instructions retired (1 ns each), exact at
    every hit: the gaps between fib's entries are the instruction counts of guest/fib.s."""
    _, events, _ = run_asm(["p fib"], 6)
    expected, _ = entry_clock(6)
    assert [ev.ts - events[0].ts for ev in events] == expected


def test_kretprobe_event_fields() -> None:
    """A return probe event: kind "r", ip the probed function's entry, caller the return
    site after the ``call`` (found in the guest's bytes), one event per call in return order."""
    m, events, _ = run_asm(["r:fibs/leave fib n=$arg1:s64 ret=$retval:s64"], 4)
    (task,) = m.tasks[1:]
    assert [ev.args["n"] for ev in events] == postorder(4)
    sites = return_sites(m, "fib", "fib")
    assert len(sites) == 2
    for ev in events:
        assert list(ev.to_dict()) == EVENT_FIELDS
        assert (ev.tid, ev.comm, ev.cpu, ev.group, ev.name, ev.kind, ev.ip) == \
            (task.tid, "fibtask", 0, "fibs", "leave", "r", "fib+0x0")
        assert ev.args["ret"] == fib(ev.args["n"])
    assert {ev.caller for ev in events[:-1]} == set(sites)
    assert not events[-1].caller.startswith("fib")          # the outer call returns to the task's start
    assert [ev.ts for ev in events] == sorted(ev.ts for ev in events)


def test_event_fields_on_an_elf_program(guest_bin: Path) -> None:
    """On a real program: tid 1 (the process's only thread), comm the file's name, main's
    return site after ``call fib`` as the outer caller, default group and event names."""
    m, status, events, _ = run_elf(guest_bin / "fib.static", ["5"],
                                   ["p fib n=%di:s64", "r fib n=$arg1:s64 ret=$retval:s64"])
    assert status == 5
    entries = [ev for ev in events if ev.kind == "p"]
    returns = [ev for ev in events if ev.kind == "r"]
    assert [ev.args["n"] for ev in entries] == preorder(5)
    assert [ev.args["n"] for ev in returns] == postorder(5)
    assert {(ev.tid, ev.comm, ev.cpu, ev.group) for ev in events} == {(1, "fib.static", 0, "kprobes")}
    assert {ev.name for ev in entries} == {"p_fib_0"} and {ev.name for ev in returns} == {"r_fib_0"}
    assert returns[-1].caller in return_sites(m, "main", "fib")
    assert {ev.caller for ev in returns[:-1]} == set(return_sites(m, "fib", "fib"))


def test_comm_is_truncated_to_task_comm_len(guest_bin: Path) -> None:
    """comm is the file name cut to 15 characters (TASK_COMM_LEN - 1), as exec sets it."""
    _, _, events, _ = run_elf(guest_bin / "quicksort.static", ["3"], ["p main"])
    assert [ev.comm for ev in events] == ["quicksort.stati"]


# --- argument types -------------------------------------------------------------------------------
def test_entry_arguments_by_type(guest_bin: Path) -> None:
    """Fetch types on parse_port(const char *s): strings as str, arrays as lists, chars as
    one-character str, unsigned/hex/signed ints as ints of their width, bitfields; $comm."""
    inputs = ["80", "http", "70000"]
    _, status, events, _ = run_elf(guest_bin / "parse.static", inputs, [
        "p:pp parse_port s=+0(%di):string c=$comm a=+0(%di):u8[3] ch=+0(%di):char "
        "u=+0(%di):u16 x=+0(%di):x16 sb=+0(%di):s8 hi=+0(%di):b4@4/8 lo=+0(%di):b4@0/8 "
        "ip=%ip:symbol d=%di:x64 d32=%di:u32"])
    assert status == 2
    assert len(events) == 3
    for ev, text in zip(events, inputs, strict=True):
        raw = text.encode() + b"\0\0"
        args = ev.args
        assert args["s"] == text and args["c"] == "parse.static"
        assert args["a"] == list(raw[:3]) and args["ch"] == text[0]
        assert args["u"] == args["x"] == int.from_bytes(raw[:2], "little")
        assert args["sb"] == raw[0] and args["hi"] == raw[0] >> 4 and args["lo"] == raw[0] & 0xF
        assert args["ip"] == "parse_port+0x0"
        assert args["d32"] == args["d"] & 0xFFFF_FFFF
        assert all(type(args[k]) is int for k in ("u", "x", "sb", "hi", "lo", "d", "d32"))
    line = format_event(events[1])
    assert (' s="http" c="parse.static" a={104,116,116} ch=\'h\' u=29800 x=0x7468 sb=104 hi=6 lo=8 '
            in line)


def test_return_value_by_type(guest_bin: Path) -> None:
    """$retval by type: sN signed, uN the two's complement, xN hex, each of the low N bits
    (a negative errno, -EINVAL = -22)."""
    _, _, events, _ = run_elf(guest_bin / "parse.static", ["http"], [
        "r parse_port s=$retval:s64 u=$retval:u64 x=$retval:x64 s32=$retval:s32 "
        "u32=$retval:u32 x8=$retval:x8 s8=$retval:s8 u8=$retval:u8"])
    (ev,) = events
    assert ev.args == {"s": -22, "u": 2**64 - 22, "x": 2**64 - 22, "s32": -22,
                       "u32": 2**32 - 22, "x8": 0xEA, "s8": -22, "u8": 0xEA}
    assert format_event(ev).endswith(" s=-22 u=18446744073709551594 x=0xffffffffffffffea s32=-22 "
                                     "u32=4294967274 x8=0xea s8=-22 u8=234\n")


def test_string_array_of_argv(guest_bin: Path) -> None:
    """string[N]: N ``char *`` read one after another (main's argv), argc as u32."""
    _, _, events, _ = run_elf(guest_bin / "parse.static", ["80", "http"],
                              ["p main argc=%di:u32 argv=+0(%si):string[3]"])
    (ev,) = events
    assert ev.args == {"argc": 3, "argv": ["parse.static", "80", "http"]}
    assert format_event(ev).endswith(' argc=3 argv={"parse.static","80","http"}\n')


# --- return probes: the entry's values -------------------------------------------------------
def test_argN_at_return_is_the_entry_argument_under_recursion() -> None:
    """$arg1 on a return probe is the argument of *that* call at its entry, so every return
    of the recursion satisfies ret == fib(n), though %di is clobbered by then."""
    _, events, handles = run_asm(["r64 fib n=$arg1:s64 ret=$retval:s64 di=%di:s64"], 10)
    assert handles[0].missed == 0
    assert Counter(ev.args["n"] for ev in events) == Counter(preorder(10))
    assert all(ev.args["ret"] == fib(ev.args["n"]) for ev in events)
    assert any(ev.args["di"] != ev.args["n"] for ev in events)     # the register moved on


def test_entry_fetch_is_the_value_at_entry() -> None:
    """$entry(%di) equals $arg1; $entry(%sp) is the stack pointer at entry, 8 below the one
    at the return (``ret`` popped the return address)."""
    _, events, _ = run_asm(["r64 fib a=$arg1:s64 e=$entry(%di):s64 s=$entry(%sp):u64 "
                            "sp=%sp:u64"], 8)
    assert len(events) == len(preorder(8))
    for ev in events:
        assert ev.args["e"] == ev.args["a"]
        assert ev.args["sp"] == ev.args["s"] + 8


@pytest.mark.parametrize("where", ["asm", "elf"])
def test_duration_is_its_own_entry_to_return(where: str, guest_bin: Path) -> None:
    """$duration is the ts difference between that call's entry event and its return event
    (a p and an r event on the same function, paired per thread, last in first out)."""
    lines = ["p fib n=%di:s64", "r64 fib n=$arg1:s64 d=$duration:u64"]
    if where == "asm":
        _, events, _ = run_asm(lines, 9)
    else:
        _, _, events, _ = run_elf(guest_bin / "fib.static", ["9"], lines)
    pairs = pair_calls(events)
    assert len(pairs) == len(preorder(9))
    for entry, ret in pairs:
        assert ret.args["n"] == entry.args["n"]
        assert ret.args["d"] == ret.ts - entry.ts
    assert len({ret.args["d"] for _, ret in pairs}) > 5      # recursion: many different durations


def test_virtual_clock_is_deterministic(guest_bin: Path) -> None:
    """Two runs of the same program and lines give identical events, ts included."""
    lines = ["p fib n=%di:s64", "r fib n=$arg1:s64 ret=$retval:s64 d=$duration:u64"]
    runs = [run_elf(guest_bin / "fib.static", ["8"], lines)[2] for _ in range(2)]
    assert [ev.to_dict() for ev in runs[0]] == [ev.to_dict() for ev in runs[1]]
    assert [format_event(ev) for ev in runs[0]] == [format_event(ev) for ev in runs[1]]
    assert len(runs[0]) > 0


def test_host_clock(guest_bin: Path) -> None:
    """clock="host": ts is the host's monotonic clock in ns, increasing, within the run."""
    m = load_elf(guest_bin / "fib.static", "6")
    events: list[Event] = []
    attach(m, "p fib", events.append, clock="host")
    before = time.monotonic_ns()
    m.run()
    after = time.monotonic_ns()
    stamps = [ev.ts for ev in events]
    assert len(stamps) == len(preorder(6))
    assert before <= stamps[0] < stamps[-1] <= after
    assert stamps == sorted(stamps)


def test_unknown_clock_is_refused() -> None:
    """Only "virtual" and "host" clocks exist."""
    with pytest.raises(ValueError, match="clock"):
        attach(guest.load("fib"), "p fib", print, clock="wall")


# --- maxactive and the profile counters -------------------------------------------------------
def test_line_without_maxactive_gets_the_kernel_default() -> None:
    """A return probe line without rN gets 10 instances: fib(12) nests 12 deep, so the
    deepest calls are missed; rN or attach(maxactive=) raises it; hits + misses = calls."""
    _, events, (handle,) = run_asm(["r fib n=$arg1:s64"], 12)
    assert handle.missed > 0
    assert len(events) + handle.missed == len(preorder(12))
    for line, kw in (("r64 fib", {}), ("r fib", {"maxactive": 64})):
        _, events, (handle,) = run_asm([line], 12, **kw)
        assert handle.missed == 0 and len(events) == len(preorder(12))


def test_handle_counts_without_misses() -> None:
    """Without misses a handle's hits are its events (kprobe_profile's second column)."""
    _, events, handles = run_asm(["p fib", "r64 fib"], 7)
    for handle in handles:
        assert (handle.hits, handle.missed) == (len(preorder(7)), 0)
    assert len(events) == 2 * len(preorder(7))


def test_hits_are_the_kernels_nhit() -> None:
    """kprobe_profile: hits = times the dispatcher ran (events), misses apart."""
    _, events, (handle,) = run_asm(["r fib"], 12)
    assert handle.missed > 0
    assert handle.hits == len(events)


# --- detaching -------------------------------------------------------------------------------------
def test_delete_line_detaches() -> None:
    """``-:GRP/EVENT`` and ``-:EVENT`` detach the event: no more events, nothing attached;
    a delete line for no attached event is ENOENT."""
    m = guest.load("fib")
    events: list[Event] = []
    handle = attach(m, "p:grp/ev fib", events.append)
    other = attach(m, "r:grp/back fib", events.append)
    m.spawn("fib", 3)
    m.run_tasks()
    assert len(events) == 2 * 5
    assert attach(m, "-:grp/ev", print) is handle
    assert attach(m, "-:back", print) is other
    assert attached(m) == []
    m.spawn("fib", 3)
    m.run_tasks()
    assert len(events) == 2 * 5
    with pytest.raises(ProbeError) as err:
        attach(m, "-:grp/ev", print)
    assert err.value.errno == 2


def test_delete_line_detaches_every_match() -> None:
    """``-:GRP/`` detaches every event of GRP; ``-:EV`` every event named EV, any group."""
    m = guest.load("fib")
    attach(m, "p:grp/a fib", print)
    attach(m, "p:grp/b fib_loop", print)
    attach(m, "p:one/c fib+4", print)
    attach(m, "p:two/c fib_loop+4", print)
    attach(m, "-:grp/", print)
    attach(m, "-:c", print)
    assert attached(m) == []


def test_delete_line_with_a_command_head_must_match_it() -> None:
    """``-:GRP/EV SYM`` detaches only if EV probes SYM (trace_kprobe_match_command_head)."""
    m = guest.load("fib")
    attach(m, "p:grp/a fib", print)
    with pytest.raises(ProbeError):
        attach(m, "-:grp/a fib_loop", print)
    assert [h.name for h in attached(m)] == ["grp/a"]
    attach(m, "-:grp/a fib", print)
    assert attached(m) == []


def test_detach_restores_memory() -> None:
    """Attaching plants int3 bytes in the guest's code; detaching every event gives the
    code back byte for byte, and the function computes as before."""
    m = guest.load("fib")
    fib_sym = m.symbols.get_symbol("fib")
    assert fib_sym is not None

    def raw() -> bytes:                  # m.read hides probes; the engine's memory does not
        return bytes(m.uc.mem_read(fib_sym.addr, fib_sym.size))
    before = raw()
    handles = [attach(m, line, print) for line in ("p fib", "r:x/r fib", "p fib+4", "p fib+0x1b")]
    assert raw() != before
    for h in handles:
        h.detach()
    assert raw() == before and attached(m) == []
    assert m.call("fib", 10) == 55


# --- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "code", "column"), [
    ("p nosuch", "BAD_PROBE_ADDR", 2),                # unknown symbol
    ("p:e nosuch+4 x=%di", "BAD_PROBE_ADDR", 4),
    ("p 0x10", "BAD_PROBE_ADDR", 2),                  # no code there
    ("r fib+4", "BAD_RETPROBE", 2),                   # kprobe_syntax_errors.tc: 'r ^vfs_read+10'
    ("r 0x400004", "BAD_RETPROBE", 2),                # an address inside fib, not its entry
    ("p fib+2", "BAD_INSN_BNDRY", 2),                 # inside 'mov rbp, rsp' (fib+1..fib+3)
    ("p:e fib+2 n=%di", "BAD_INSN_BNDRY", 4),
    ("p:e fib x=@nosuch", "FAIL_REG_PROBE", 8),       # unknown @SYM: at the argument
    ("p:e fib n=%di x=+0(@nosuch):u8", "FAIL_REG_PROBE", 14),
])
def test_registration_errors(line: str, code: str, column: int) -> None:
    """Errors only the machine can find: the error_log code and caret column; nothing is
    attached and no byte of the guest changes."""
    m = guest.load("fib")
    before = bytes(m.uc.mem_read(0x400000, 0x40))
    with pytest.raises(ParseError) as err:
        attach(m, line, print)
    assert (err.value.code, err.value.column) == (code, column)
    caret = str(err.value).splitlines()[-1]
    assert caret.index("^") - len("  Command: ") == column
    assert attached(m) == [] and bytes(m.uc.mem_read(0x400000, 0x40)) == before


def test_appending_a_different_probe_type_to_an_event_is_refused() -> None:
    """A second line for an existing event must have the same probe type and arguments
    (trace_kprobe.c append_trace_kprobe)."""
    m = guest.load("fib")
    attach(m, "p:grp/ev fib n=%di", print)
    with pytest.raises(ParseError) as err:
        attach(m, "r:grp/ev fib n=%di", print)
    assert err.value.code == "DIFF_PROBE_TYPE"
    with pytest.raises(ParseError) as err:
        attach(m, "p:grp/ev fib n=%di", print)
    assert err.value.code == "SAME_PROBE"


# --- objects mapped later, threads, stacks ---------------------------------------------------
def test_pending_object_symbol(guest_bin: Path) -> None:
    """``OBJECT:SYM`` before the object is mapped attaches pending and makes events once
    the dynamic loader maps libc (printf's buffer: one malloc)."""
    m = load_elf(guest_bin / "fib.dyn", "5")
    events: list[Event] = []
    assert m.symbols.get_symbol("libc.so.6:malloc") is None
    entry = attach(m, "p libc.so.6:malloc size=%di:u64", events.append)
    back = attach(m, "r libc.so.6:malloc ret=$retval:x64 size=$arg1:u64", events.append)
    assert entry.hits == back.hits == 0
    assert m.run() == 5
    entries = [ev for ev in events if ev.kind == "p"]
    returns = [ev for ev in events if ev.kind == "r"]
    assert len(entries) == len(returns) >= 1
    assert {ev.ip for ev in events} == {"libc.so.6:malloc+0x0"}
    assert {ev.name for ev in entries} == {"p_libc_so_6_malloc_0"}
    for p, r in zip(entries, returns, strict=True):
        assert r.args["size"] == p.args["size"] > 0 and r.args["ret"] != 0
        assert r.caller is not None and r.caller.startswith("libc.so.6:")


def test_threads_have_their_own_tid_and_pair_their_own_calls(guest_bin: Path) -> None:
    """threads join 3: each thread's fib_thread(n) events carry its own tid and the process's
    comm, the three calls overlap in time, and each return pairs with its own thread's entry
    ($arg1, $duration) though the scheduler interleaves them."""
    _, status, events, _ = run_elf(
        guest_bin / "threads.static", ["join", "3"],
        ["p:t/enter fib_thread n=%di:s64", "r:t/leave fib_thread n=$arg1:s64 ret=$retval:s64 "
         "d=$duration:u64"])
    assert status == 0
    assert {ev.comm for ev in events} == {"threads.static"}
    tids = sorted({ev.tid for ev in events})
    assert len(tids) == 3 and 1 not in tids            # not the main thread
    # The three calls are in flight at once: every entry comes before the first return.
    assert [ev.kind for ev in events][:3] == ["p", "p", "p"]
    pairs = pair_calls(events)
    assert sorted(p.args["n"] for p, _ in pairs) == [20, 21, 22]
    for p, r in pairs:
        assert r.tid == p.tid and r.args["n"] == p.args["n"]
        assert r.args["ret"] == fib(p.args["n"]) and r.args["d"] == r.ts - p.ts


def test_recursion_on_several_threads(guest_bin: Path) -> None:
    """A worker pool (guest/c/pool.c) runs fib on 3 threads: switches land inside the
    recursion, and still every return is its own thread's call: ret == fib($arg1), and
    $duration is the gap to that thread's matching entry."""
    _, status, events, handles = run_elf(
        guest_bin / "pool.static", ["3", "6", "6"],
        ["p fib n=%di:s64", "r fib n=$arg1:s64 ret=$retval:s64 d=$duration:u64"], maxactive=256)
    assert status == 0 and all(h.missed == 0 for h in handles)
    assert len({ev.tid for ev in events}) == 3
    depth: Counter[int] = Counter()
    switches_inside = 0
    for a, b in zip(events, events[1:], strict=False):
        depth[a.tid] += 1 if a.kind == "p" else -1
        switches_inside += a.tid != b.tid and depth[a.tid] > 0
    assert switches_inside > 0                  # the test means something
    pairs = pair_calls(events)
    for p, r in pairs:
        assert r.args["n"] == p.args["n"] and r.args["ret"] == fib(r.args["n"])
        assert r.args["d"] == r.ts - p.ts


def test_stack_option() -> None:
    """stack=True gives each event ``stack``: the probe's address, then the return
    addresses, innermost first; without it ``stack`` is None."""
    m, events, _ = run_asm(["p fib n=%di:s64"], 4, stack=True)
    sites = {m.symbols.get_symbol("fib").addr + int(s.split("+")[1], 16)  # type: ignore[union-attr]
             for s in return_sites(m, "fib", "fib")}
    fib_addr = m.symbols.get_symbol("fib").addr  # type: ignore[union-attr]
    for ev, depth in zip(events, depths(4), strict=True):
        assert ev.stack is not None and ev.stack[0] == fib_addr
        assert len(ev.stack) == depth and set(ev.stack[1:]) <= sites
    _, plain, _ = run_asm(["p fib"], 3)
    assert all(ev.stack is None for ev in plain)


def test_stack_option_on_an_elf_program(guest_bin: Path) -> None:
    """On a real program the stack goes on through main to _start (CFI unwinding)."""
    m, _, events, _ = run_elf(guest_bin / "fib.static", ["4"], ["p fib"], stack=True)
    stacks = [[m.symbolize(a).split("+")[0] for a in ev.stack or ()] for ev in events]
    for stack in stacks:
        inner = stack.index("main")
        assert set(stack[:inner]) == {"fib"} and stack[-1] == "_start"
    assert Counter(s.index("main") for s in stacks) == Counter({1: 1, 2: 2, 3: 4, 4: 2})


def test_runaway_stop_names_the_guests_place(guest_bin: Path) -> None:
    """Wherever an instruction budget ends, the GuestFault names the guest's own code,
    never the probes' slot page (fib.static's fib starts with 'mov rax, rdi', which runs
    out of line; the budgets cover two periods of fib's recursion)."""
    for budget in range(20000, 20024):
        m = load_elf(guest_bin / "fib.static", "45")
        attach(m, "p fib", lambda ev: None)
        with pytest.raises(GuestFault) as err:
            m.run(max_insns=budget)
        assert m.symbols.lookup(err.value.rip) is not None, str(err.value)
