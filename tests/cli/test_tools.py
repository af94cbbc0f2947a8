"""The tracing tools (``kprobe-emu trace|funccount|funclatency|stackcount|argdist``) on
guest programs, under the virtual clock, so every output is exact and repeatable.

Rules pinned (the tracing issue's contract):
- each tool takes run's options plus ``-o FILE`` and ``--clock``; the program's own output
  stays on stdout and the exit status is the program's;
- ``trace`` prints trace_pipe lines (``--json``: the Event fields; ``--perfetto``: a
  Trace Event Format file); a bad line exits 2 with one error_log entry, no traceback;
- ``funccount`` counts are exact (the ``-finstrument-functions`` oracle, 2*fib(N+1)-1);
- ``funclatency`` pairs each return with its own entry: its histogram is the one of the
  true per-call durations, where bcc's method (one start time per thread) is wrong
  under recursion; bcc's log2 histogram layout (bcc/table.py ``_print_log2_hist``);
- ``stackcount`` counts each distinct stack (innermost first; ``-f`` folded, outermost
  first); ``argdist`` counts or histograms one fetch expression;
- tools' return probes get 4096 instances unless ``-M N``; a trace line keeps 10.

Expected values come from the Fibonacci call tree, guest/c/fib.c (main prints
``fib(N) = F`` per argument and exits with the sum mod 256), a native run of the
instrumented build, or an independent re-implementation of bcc's formatting.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from emu import Machine
from kprobe_emu.cli import main
from probes.events import Event, attach, format_event
from tests.conftest import EVENT_FIELDS, fib, postorder, preorder
from tests.guests import guest_bin as _guest_bin
from tests.guests import instrumented_entries


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


# --- the Fibonacci call tree, independently ---------------------------------------------------
def depths(n: int, d: int = 1) -> list[int]:
    """The depth of each call (1: called from main)."""
    return [d] if n < 2 else [d, *depths(n - 1, d + 1), *depths(n - 2, d + 1)]


def fib_output(*ns: int) -> str:
    """guest/c/fib.c's stdout for these arguments."""
    return "".join(f"fib({n}) = {fib(n)}\n" for n in ns)


# --- bcc's formats, re-implemented from bcc/table.py and helpers.h ---------------------------
def bpf_log2l(v: int) -> int:
    """bcc's helpers.h: bpf_log2(v) + 1 with bpf_log2(0) == bpf_log2(1) == 0, so 0 and 1
    share slot 1 (the "0 -> 1" row)."""
    return max(v.bit_length(), 1)


def bcc_log2_hist(values: list[int], val_type: str) -> str:
    """bcc/table.py ``_print_log2_hist`` of the values, each put in slot bpf_log2l(v)."""
    slots = Counter(bpf_log2l(v) for v in values)
    idx_max = max(slots, default=-1)
    val_max = max(slots.values(), default=0)
    if idx_max <= 0:
        return ""
    # bcc's own format strings, verbatim.
    lines = ["     %-19s : count     distribution" % val_type]  # noqa: UP031
    for i in range(1, idx_max + 1):
        low, high = (1 << i) >> 1, (1 << i) - 1
        if low == high:
            low -= 1
        stars = "*" * min(40, int(40 * slots[i] / val_max))
        lines.append("%10d -> %-10d : %-8d |%-40s|" % (low, high, slots[i], stars))  # noqa: UP031
    return "\n".join(lines) + "\n"


HIST_ROW = re.compile(r"^\s*(\d+) -> (\d+)\s*: (\d+)\s*\|[*+ ]*\|$")


def hist_rows(text: str) -> list[tuple[int, int, int]]:
    """(low, high, count) of each histogram row."""
    rows = []
    for line in text.splitlines():
        if (m := HIST_ROW.match(line)):
            low, high, count = map(int, m.groups())
            rows.append((low, high, count))
    return rows


# --- running ----------------------------------------------------------------------------------
def cli(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capfd.readouterr()
    return status, out, err


def attach_run(binary: Path, args: list[str], lines: list[str]) -> tuple[int, list[Event]]:
    """The same lines through ``probes.events.attach``, with the environment the tools
    give the guest (the host's, as it is now: start-up work depends on its size)."""
    m = Machine.from_elf(str(binary), [str(binary), *args], env=dict(os.environ))
    m.stdout = io.BytesIO()
    events: list[Event] = []
    for line in lines:
        attach(m, line, events.append)
    return m.run(), events


def true_durations(events: list[dict]) -> list[int]:
    """Per-call durations, each return paired with its own entry (last in, first out per
    thread): the ground truth."""
    open_calls: dict[int, list[int]] = {}
    out = []
    for ev in events:
        if ev["kind"] == "p":
            open_calls.setdefault(ev["tid"], []).append(ev["ts"])
        else:
            out.append(ev["ts"] - open_calls[ev["tid"]].pop())
    return out


def bcc_durations(events: list[dict]) -> list[int]:
    """bcc funclatency's method: ``start[tid] = ts`` at every entry (a nested entry
    overwrites its caller's), ``delta = ts - start[tid]; start.delete(tid)`` at a
    return; a return that finds no start is dropped."""
    start: dict[int, int] = {}
    out = []
    for ev in events:
        if ev["kind"] == "p":
            start[ev["tid"]] = ev["ts"]
        elif ev["tid"] in start:
            out.append(ev["ts"] - start.pop(ev["tid"]))
    return out


def trace_json(capfd: pytest.CaptureFixture[str], binary: Path, *args: str,
               lines: tuple[str, ...] = ("p fib", "r4096 fib")) -> tuple[list[dict], str]:
    """``trace --json`` events (and the program's output, the non-JSON lines)."""
    argv = ["trace", "--json"]
    for line in lines:
        argv += ["-e", line]
    status, out, _ = cli(capfd, *argv, str(binary), *args)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return events, "".join(line + "\n" for line in out.splitlines() if not line.startswith("{"))


# --- trace ----------------------------------------------------------------------------------------
def test_trace_text(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """trace prints one trace_pipe line per hit, byte for byte what attach() + format_event
    give for the same program and lines; the program's output follows; exit status is the
    program's; the profile (event, hits, misses) goes to stderr."""
    binary = guest_bin / "fib.static"
    lines = ["p:fibs/enter fib n=%di:s64", "r:fibs/leave fib n=$arg1:s64 ret=$retval:s64"]
    status, out, err = cli(capfd, "trace", "-e", lines[0], "-e", lines[1], str(binary), "5")
    assert status == 5
    want_status, events = attach_run(binary, ["5"], lines)
    assert want_status == 5
    assert out == "".join(format_event(ev) for ev in events) + fib_output(5)
    entry = re.compile(r"^ {6}fib\.static-1 {7}\[000\] +\d+\.\d{6}: enter: \(fib\+0x0/0x[0-9a-f]+\) "
                       r"n=(\d+)$")
    back = re.compile(r"^ {6}fib\.static-1 {7}\[000\] +\d+\.\d{6}: leave: "
                      r"\((fib|main)\+0x[0-9a-f]+/0x[0-9a-f]+ <- fib\) n=(\d+) ret=(\d+)$")
    text = out.splitlines()[:-1]
    assert [int(m.group(1)) for line in text if (m := entry.match(line))] == preorder(5)
    returns = [(int(m.group(2)), int(m.group(3))) for line in text if (m := back.match(line))]
    assert returns == [(n, fib(n)) for n in postorder(5)]
    assert len(text) == 2 * len(preorder(5))
    calls = len(preorder(5))
    # kprobe_profile: probes_profile_seq_show's "  %-44s %15lu %15lu\n"
    assert err == "  %-44s %15d %15d\n  %-44s %15d %15d\n" % ("enter", calls, 0, "leave", calls, 0)  # noqa: UP031


def test_trace_is_deterministic(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """--clock virtual (the default): two runs print the same bytes, timestamps included."""
    argv = ["trace", "-e", "p fib n=%di", "-e", "r fib $retval", str(guest_bin / "fib.static"), "6"]
    first = cli(capfd, *argv)
    assert first == cli(capfd, *argv)
    assert first[1].count("\n") == 2 * len(preorder(6)) + 1


def test_trace_json(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """--json: one object a line with exactly the Event fields, the same events attach()
    gives; the program's output stays plain text."""
    binary = guest_bin / "fib.static"
    lines = ("p fib n=%di:u32", "r fib n=$arg1:u32 ret=$retval:s64 d=$duration:u64")
    events, rest = trace_json(capfd, binary, "4", lines=lines)
    assert rest == fib_output(4)
    _, want = attach_run(binary, ["4"], list(lines))
    assert events == [ev.to_dict() for ev in want]
    assert all(list(ev) == EVENT_FIELDS for ev in events)
    returns = [ev for ev in events if ev["kind"] == "r"]
    assert [(ev["args"]["n"], ev["args"]["ret"]) for ev in returns] == [(n, fib(n)) for n in postorder(4)]
    assert [ev["args"]["d"] for ev in returns] == true_durations(events)


def test_trace_perfetto(guest_bin: Path, capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--perfetto FILE: a Trace Event Format file with the main thread's track, one X slice
    per call (nesting as deep as the recursion), one instant per kprobe hit; stdout keeps
    the text lines."""
    path = tmp_path / "fib.json"
    status, out, _ = cli(capfd, "trace", "--perfetto", str(path), "-e", "p fib", "-e", "r fib",
                         str(guest_bin / "fib.static"), "6")
    assert status == 8 and out.endswith(fib_output(6))
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    for ev in events:
        assert {"name", "ph", "pid", "tid"} <= set(ev)
        assert ev["ph"] == "M" or ("ts" in ev and ev["ts"] >= 0)
    assert any(ev["ph"] == "M" and ev["name"] == "thread_name" and ev["tid"] == 1 for ev in events)
    slices = sorted(((round(ev["ts"] * 1000), round((ev["ts"] + ev["dur"]) * 1000))
                     for ev in events if ev["ph"] == "X"), key=lambda se: (se[0], -se[1]))
    assert len(slices) == len(preorder(6))
    assert sum(ev["ph"] == "i" for ev in events) == len(preorder(6))
    stack: list[tuple[int, int]] = []
    deepest = 0
    for start, end in slices:
        assert end >= start
        while stack and stack[-1][1] <= start:
            stack.pop()
        assert not stack or end <= stack[-1][1]
        stack.append((start, end))
        deepest = max(deepest, len(stack))
    assert deepest == max(depths(6))


# --- funccount -----------------------------------------------------------------------------------


def test_funccount_is_exact(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """fib's calls: 2*fib(N+1) - 1 per argument, and the instrumented build's count;
    bcc's table layout ("%-36s %8s"); exit status (55 + 144) % 256."""
    status, out, _ = cli(capfd, "funccount", "fib", str(guest_bin / "fib.static"), "10", "12")
    assert status == (55 + 144) % 256
    calls = (2 * fib(11) - 1) + (2 * fib(13) - 1)
    assert calls == instrumented_entries(guest_bin / "fib.instr", ["10", "12"], "fib")
    # bcc funccount: print("%-36s %8s" % ("FUNC", "COUNT")), print("%-36s %8d" % (name, count))
    assert out == fib_output(10, 12) + "%-36s %8s\n%-36s %8d\n" % ("FUNC", "COUNT", "fib", calls)  # noqa: UP031


def test_funccount_regex_and_several_functions(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """-r: a regular expression over function names; each match is counted on its own,
    in ascending order of count."""
    status, out, _ = cli(capfd, "funccount", "-r", "^(fib|main|parse_port)$",
                         str(guest_bin / "fib.static"), "7")
    assert status == fib(7)
    assert out == fib_output(7) + "%-36s %8s\n%-36s %8d\n%-36s %8d\n" % (  # noqa: UP031
        "FUNC", "COUNT", "main", 1, "fib", len(preorder(7)))


# --- funclatency ---------------------------------------------------------------------------------
def test_funclatency_histogram_is_the_true_durations(guest_bin: Path,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    """funclatency's whole output: bcc's histogram of the true per-call durations (from
    trace's p and r events paired per call), the average line, the misses."""
    events, _ = trace_json(capfd, guest_bin / "fib.static", "8")
    truth = true_durations(events)
    assert len(truth) == len(preorder(8))
    status, out, _ = cli(capfd, "funclatency", "fib", str(guest_bin / "fib.static"), "8")
    assert status == fib(8)
    total, count = sum(truth), len(truth)
    assert out == (fib_output(8) + bcc_log2_hist(truth, "nsecs") +
                   f"\navg = {total // count} nsecs, total: {total} nsecs, count: {count}\n"
                   "missed: 0\n")
    assert sum(n for _, _, n in hist_rows(out)) == count


def test_funclatency_is_right_where_bccs_method_is_wrong(guest_bin: Path,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    """Under recursion bcc's funclatency (start time keyed by thread, overwritten by the
    nested entries, deleted at the first return) keeps only the leaves' durations and
    drops every other return; funclatency's histogram is the ground truth's."""
    events, _ = trace_json(capfd, guest_bin / "fib.static", "10")
    truth, bcc = true_durations(events), bcc_durations(events)
    assert len(truth) == len(preorder(10)) and len(bcc) == fib(11)      # bcc: the leaves only
    status, out, _ = cli(capfd, "funclatency", "fib", str(guest_bin / "fib.static"), "10")
    assert status == fib(10)
    rows = hist_rows(out)
    assert rows == hist_rows(bcc_log2_hist(truth, "nsecs"))
    assert rows != hist_rows(bcc_log2_hist(bcc, "nsecs"))
    assert f"count: {len(truth)}\n" in out and "missed: 0\n" in out


def test_funclatency_counts_every_call(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Several arguments: count is the number of calls; the buckets add up to it; -F gives
    a "Function = fib" histogram; --clock host works too (same count)."""
    calls = len(preorder(9)) + len(preorder(11))
    for extra in ([], ["-F"], ["--clock", "host"]):
        status, out, _ = cli(capfd, "funclatency", *extra, "fib", str(guest_bin / "fib.static"), "9", "11")
        assert status == (fib(9) + fib(11)) % 256
        assert out.startswith(fib_output(9, 11))
        assert f"count: {calls}\n" in out and "missed: 0\n" in out
        assert sum(n for _, _, n in hist_rows(out)) == calls
        assert ("\nFunction = fib\n" in out) == (extra == ["-F"])


def test_funclatency_maxactive_1_misses_the_recursion(guest_bin: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    """-M 1: the outer call holds the only instance, every nested call is missed."""
    status, out, _ = cli(capfd, "funclatency", "-M", "1", "fib", str(guest_bin / "fib.static"), "5")
    assert status == 5
    assert "count: 1\n" in out and f"missed: {len(preorder(5)) - 1}\n" in out


def test_funclatency_default_maxactive_misses_nothing(guest_bin: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    """Tools' return probes get 4096 instances, a trace line without rN 10: fib(14) nests
    14 deep, so the trace line misses and funclatency does not."""
    status, out, err = cli(capfd, "funclatency", "fib", str(guest_bin / "fib.static"), "14")
    assert "missed: 0\n" in out and f"count: {len(preorder(14))}\n" in out
    status, out, err = cli(capfd, "trace", "-e", "r fib", str(guest_bin / "fib.static"), "14")
    (name, hits, missed) = err.split()
    assert name == "r_fib_0" and int(missed) > 0
    assert out.count("r_fib_0") + int(missed) == len(preorder(14))


@pytest.mark.parametrize(("option", "unit", "div"), [("-u", "usecs", 1000), ("-m", "msecs", 10**6)])
def test_funclatency_units(option: str, unit: str, div: int, guest_bin: Path,
                           capfd: pytest.CaptureFixture[str]) -> None:
    """-u, -m: bcc's ``delta /= 1000`` (or 1000000) per call; the average line divides the
    total in ns (``total /= 1000; avg = total / counts``, printed %ld); the rows past
    "0 -> 1" (no zero there) are bcc's."""
    events, _ = trace_json(capfd, guest_bin / "fib.static", "12")
    truth = true_durations(events)
    status, out, _ = cli(capfd, "funclatency", option, "fib", str(guest_bin / "fib.static"), "12")
    assert status == fib(12) % 256
    total, count = sum(truth), len(truth)
    assert f"\navg = {int(total / div / count)} {unit}, total: {int(total / div)} {unit}, " \
           f"count: {count}\nmissed: 0\n" in out
    assert hist_rows(out)[1:] == hist_rows(bcc_log2_hist([d // div for d in truth], unit))[1:]


@pytest.mark.parametrize(("option", "div"), [("-u", 1000), ("-m", 10**6)])
def test_funclatency_units_count_sub_unit_calls(option: str, div: int, guest_bin: Path,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    """A call under one unit is 0 units, bpf_log2l(0) = 1: the "0 -> 1" row; so the rows
    add up to count, as in bcc."""
    events, _ = trace_json(capfd, guest_bin / "fib.static", "12")
    truth = true_durations(events)
    status, out, _ = cli(capfd, "funclatency", option, "fib", str(guest_bin / "fib.static"), "12")
    assert hist_rows(out) == hist_rows(bcc_log2_hist([d // div for d in truth], "x"))
    assert sum(n for _, _, n in hist_rows(out)) == len(truth)


# --- stackcount ----------------------------------------------------------------------------------
def _stack_blocks(text: str) -> list[tuple[tuple[str, ...], int]]:
    """stackcount's default output: frames (2 spaces), then the count (4 spaces), a blank line."""
    blocks = []
    for block in text.strip("\n").split("\n\n"):
        lines = block.splitlines()
        assert all(line.startswith("  ") and not line.startswith("   ") for line in lines[:-1])
        assert lines[-1].startswith("    ")
        blocks.append((tuple(line.strip() for line in lines[:-1]), int(lines[-1])))
    return blocks


def test_stackcount_counts_the_recursion_levels(guest_bin: Path,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    """fib(4): one distinct stack per depth, counted as often as the call tree has calls at
    that depth (1, 2, 4, 2), innermost frame first, through main to _start; ascending
    counts. -f prints the same stacks folded, outermost first."""
    binary = str(guest_bin / "fib.static")
    status, out, _ = cli(capfd, "stackcount", "fib", binary, "4")
    assert status == 3 and out.startswith(fib_output(4))
    blocks = _stack_blocks(out[len(fib_output(4)):])
    tails = {stack[stack.index("main"):] for stack, _ in blocks}
    assert len(tails) == 1
    (tail,) = tails
    assert tail[0] == "main" and tail[-1] == "_start"
    want = Counter(depths(4))
    assert Counter({stack.index("main"): n for stack, n in blocks}) == want
    assert all(set(stack[:stack.index("main")]) == {"fib"} for stack, _ in blocks)
    assert [n for _, n in blocks] == sorted(n for _, n in blocks)
    status, folded, _ = cli(capfd, "stackcount", "-f", "fib", binary, "4")
    assert status == 3
    lines = folded[len(fib_output(4)):].splitlines()
    assert sorted(lines) == sorted(";".join(reversed(stack)) + f" {n}" for stack, n in blocks)
    assert {line.rsplit(" ", 1)[0] for line in lines} == \
        {";".join(reversed(tail)) + ";fib" * d for d in want}


# --- argdist ------------------------------------------------------------------------------------
def test_argdist_counts(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """-C 'p:fib:$arg1': how often fib was called with each n (the call tree's counts);
    values print as their type does ($arg1 is x64: hex; :u32 decimal); rarest first."""
    binary = str(guest_bin / "fib.static")
    want = Counter(preorder(7))
    for expr, show in (("$arg1", hex), ("$arg1:u32", str)):
        spec = f"p:fib:{expr}"
        status, out, _ = cli(capfd, "argdist", "-C", spec, binary, "7")
        assert status == fib(7)
        head, *rows = out[len(fib_output(7)):].splitlines()
        assert head == f"[{spec}]"
        assert rows[0].split() == ["COUNT", expr]
        assert rows[-1] == "missed: 0"
        got = [(int(c), v) for c, v in (r.split() for r in rows[1:-1])]
        assert Counter({v: c for c, v in got}) == Counter({show(n): c for n, c in want.items()})
        assert [c for c, _ in got] == sorted(c for c, _ in got)


def test_argdist_histogram(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """-H 'r:fib:$retval': bcc's log2 histogram of fib(n) over the calls; the header names
    the spec and the expression. (The "0 -> 1" row, where bcc also counts the zeros, is
    pinned by the next test.)"""
    status, out, _ = cli(capfd, "argdist", "-H", "r:fib:$retval", str(guest_bin / "fib.static"), "9")
    assert status == fib(9) % 256
    values = [fib(n) for n in preorder(9)]
    got = hist_rows(out)
    want = hist_rows(bcc_log2_hist(values, "$retval"))
    assert got[1:] == want[1:]
    assert out.startswith(fib_output(9) + "[r:fib:$retval]\n     $retval             : count")
    assert out.endswith("missed: 0\n")


def test_argdist_histogram_counts_zeros(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """-H with zeros: fib(0) returns 0; bcc counts it in the "0 -> 1" row."""
    _, out, _ = cli(capfd, "argdist", "-H", "r:fib:$retval", str(guest_bin / "fib.static"), "9")
    assert hist_rows(out) == hist_rows(bcc_log2_hist([fib(n) for n in preorder(9)], "$retval"))


# --- shared options, errors ------------------------------------------------------------------------
@pytest.mark.parametrize("tool", [
    ["trace", "-e", "p fib n=%di"],
    ["trace", "--json", "-e", "r fib $retval"],
    ["funccount", "fib"],
    ["funclatency", "fib"],
    ["stackcount", "-f", "fib"],
    ["argdist", "-C", "p:fib:$arg1"],
    ["argdist", "-H", "r:fib:$retval"],
])
def test_output_file(tool: list[str], guest_bin: Path, capfd: pytest.CaptureFixture[str],
                     tmp_path: Path) -> None:
    """-o FILE: the tool's output goes to FILE, the program's stays alone on stdout; the
    same tool output as without -o."""
    binary = str(guest_bin / "fib.static")
    path = tmp_path / "out.txt"
    status, out, _ = cli(capfd, *tool, "-o", str(path), binary, "6")
    assert (status, out) == (fib(6), fib_output(6))
    status, plain, _ = cli(capfd, *tool, binary, "6")
    assert path.read_text() != ""
    assert plain.replace(fib_output(6), "", 1) == path.read_text()


@pytest.mark.parametrize(("argv", "command", "column"), [
    (["trace", "-e", "p:fibs fib n=%none"], "p:fibs fib n=%none", 13),
    (["trace", "-e", "p fib", "-e", "r fib+4"], "r fib+4", 2),
    (["trace", "-e", "p nosuch"], "p nosuch", 2),
    (["trace", "-e", "r100000 fib"], "r100000 fib", 1),
    (["argdist", "-C", "p:fib:%none"], "p:argdist/value fib value=%none", 26),
])
def test_bad_probe_line_exits_2_with_the_error_log(argv: list[str], command: str, column: int,
                                                   guest_bin: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    """A bad line: status 2 before the program runs (nothing on stdout), one error_log entry
    (``trace_kprobe: error: ...``, ``Command: ...``, the caret under the faulty spot) on
    stderr, no traceback."""
    status, out, err = cli(capfd, *argv, str(guest_bin / "fib.static"), "5")
    assert status == 2 and out == ""
    assert "Traceback" not in err
    assert err.count("trace_kprobe: error: ") == 1
    lines = err.splitlines()
    assert len(lines) == 3 and lines[0].endswith(tuple(f"error: {e}" for e in (
        "Invalid register name", "Retprobe address must be an function entry",
        "Invalid probed address or symbol", "Maxactive is too big")))
    assert lines[1] == f"  Command: {command}"
    assert lines[2] == " " * (len("  Command: ") + column) + "^"


@pytest.mark.parametrize("argv", [
    ["funccount", "nosuch_function"],
    ["funclatency", "-M", "0", "fib"],
    ["stackcount", "-r", "(unclosed", ],
    ["argdist", "-C", "fib:$arg1"],
])
def test_bad_tool_arguments_exit_2_in_one_line(argv: list[str], guest_bin: Path,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    """No match, -M 0, a bad regex, a bad argdist spec: one line, status 2, no run."""
    status, out, err = cli(capfd, *argv, str(guest_bin / "fib.static"), "5")
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"kprobe-emu {argv[0]}: ")


def test_exit_status_passes_through(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """parse exits with the number of inputs that failed; a missing program is 127."""
    status, out, _ = cli(capfd, "trace", "-e", "r parse_port ret=$retval:s64",
                         str(guest_bin / "parse.static"), "80", "x", "")
    assert status == 2
    assert [line.split("ret=")[1] for line in out.splitlines() if "ret=" in line] == ["80", "-22", "-22"]
    status, _, err = cli(capfd, "funccount", "fib", str(guest_bin / "no-such-program"))
    assert status == 127 and err.count("\n") == 1


# --- run's options ------------------------------------------------------------------------------
def test_seed_and_timeslice_replay_threads(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """--seed and --timeslice: the same seed replays the same interleaving of the threads,
    byte for byte; each thread's lines carry its own tid; another seed interleaves otherwise."""
    def run(seed: int) -> str:
        status, out, _ = cli(capfd, "trace", "--seed", str(seed), "--timeslice", "50",
                             "-e", "p:t/enter fib_thread n=%di:u32",
                             "-e", "r:t/leave fib_thread n=$arg1:u32 ret=$retval:u64",
                             str(guest_bin / "threads.static"), "join", "3")
        assert status == 0
        return out
    out = run(3)
    assert out == run(3)
    assert out != run(4)
    events = [line for line in out.splitlines() if ": enter: " in line or ": leave: " in line]
    assert len(events) == 6
    by_tid: dict[str, list[str]] = {}
    for line in events:
        by_tid.setdefault(line.split()[0], []).append(line)
    assert len(by_tid) == 3 and all(tid.startswith("threads.static-") for tid in by_tid)
    for lines in by_tid.values():
        (n,) = re.findall(r" n=(\d+)$", lines[0])
        assert lines[1].endswith(f" n={n} ret={fib(int(n))}")
    assert out.endswith("thread 0: fib = 6765\nthread 1: fib = 10946\nthread 2: fib = 17711\n")


def test_fs_root(guest_bin: Path, capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--fs-root: the program reads its files there, under a tool as under run."""
    (tmp_path / "in.txt").write_text("mapped\n")
    status, out, _ = cli(capfd, "funccount", "--fs-root", str(tmp_path), "main",
                         str(guest_bin / "sysprobe"), "cat", "in.txt")
    assert status == 0
    assert out == "mapped\n" + "%-36s %8s\n%-36s %8d\n" % ("FUNC", "COUNT", "main", 1)  # noqa: UP031


def test_max_insns_stops_a_runaway_and_still_reports(guest_bin: Path,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    """--max-insns: status 124, one line on stderr, and the tool reports what it counted."""
    status, out, err = cli(capfd, "funccount", "--max-insns", "300000", "fib",
                           str(guest_bin / "fib.static"), "45")
    assert status == 124
    head, row = out.splitlines()
    assert head.split() == ["FUNC", "COUNT"] and row.split()[0] == "fib" and int(row.split()[1]) > 0
    assert sum("instruction budget of 300000" in line for line in err.splitlines()) == 1
    assert "Traceback" not in err
