"""probes.overhead: what probes cost on a workload (issue 13).

Rules pinned:
- hits are exact: a kprobe's and a kretprobe's equal the -finstrument-functions oracle's
  entries (guest/c/instrument.c), and a probe line's equal the tracing tools' count;
- a handler that busy-waits a known number of host ns shows up as that much
  ``handler_us``, within the reported interval (the no-op twin takes the mechanism);
- ``to_json()`` is exactly the issue's object (plus ``host``);
- a warning fires on a workload of fewer than 1,000 hits;
- the bootstrap interval is reproducible for the same samples;
- a probe on ``OBJECT:SYM`` (pending until the library maps) is measured, floor included.

Timing is asserted only for the busy-wait, with a wide margin; everything else is counts
and shapes, so the tests hold on a loaded host.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from emu import Machine
from probes import Kprobe, Kretprobe, register_kprobe, register_kretprobe
from probes.events import TextSink, attach
from probes.overhead import OverheadReport, Spread, bootstrap_ci, measure, spread
from tests.conftest import fib
from tests.guests import guest_bin as _guest_bin
from tests.guests import instrumented_entries

BUSY_NS = 20_000


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


def fib_machine(guest_bin: Path, *args: str, prog: str = "fib.static") -> Callable[[], Machine]:
    def make() -> Machine:
        m = Machine.from_elf(str(guest_bin / prog), [prog, *args], env={})
        m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
        return m
    return make


# --- a schema check, exact keys and types --------------------------------------------------------
SPREAD = {"median": float, "min": float, "max": float, "ci95": [float, float]}
PROBE = {"probe": str, "hits": int, "missed": int, "per_hit_us": SPREAD, "mechanism_us": SPREAD,
         "handler_us": SPREAD, "floor_ratio": (float, type(None)), "slowdown": float}
SCHEMA = {"runs": int, "unprobed_s": float, "probes": [PROBE],
          "host": {"loadavg": [float, float, float], "cpus": int}}


def check_schema(value: Any, schema: Any, where: str = "$") -> None:
    """``value`` has exactly ``schema``'s shape: a dict's keys, a list's items (one
    schema for all, or one per item), a type or a tuple of types at the leaves."""
    if isinstance(schema, dict):
        assert isinstance(value, dict), where
        assert list(value) == list(schema), (where, list(value))
        for key, sub in schema.items():
            check_schema(value[key], sub, f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(value, list), where
        if len(schema) > 1:
            assert len(value) == len(schema), where
        for i, item in enumerate(value):
            check_schema(item, schema[i] if len(schema) > 1 else schema[0], f"{where}[{i}]")
    else:
        types = schema if isinstance(schema, tuple) else (schema,)
        ok = isinstance(value, types) and not (isinstance(value, bool))
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            ok = True                       # JSON does not tell 2.0 from 2
        assert ok, (where, value)


# --- hits ------------------------------------------------------------------------------------------
def test_hits_equal_the_instrumented_build_and_the_tracing_tools(guest_bin: Path) -> None:
    """A kprobe, a kretprobe (enough instances) and a probe line on fib: each counts
    2*fib(N+1)-1 hits, the -finstrument-functions entries, and the line's EventHandle
    (the tools' count) agrees; nothing is missed."""
    args = ["12"]
    calls = instrumented_entries(guest_bin / "fib.instr", args, "fib")
    assert calls == 2 * fib(13) - 1
    handles: list[Any] = []

    def line(m: Machine) -> object:
        handles.append(attach(m, "p:fibs fib n=%di:s64", TextSink(io.StringIO()), clock="host"))
        return handles[-1]
    report = measure(fib_machine(guest_bin, *args), {
        "kprobe": lambda m: register_kprobe(m, Kprobe("fib", pre_handler=lambda kp, regs: None)),
        "kretprobe": lambda m: register_kretprobe(m, Kretprobe("fib", handler=lambda ri, regs: None,
                                                               maxactive=64)),
        "line": line,
    }, repeats=1, best_of=1)
    assert [(p.probe, p.hits, p.missed) for p in report.probes] == [
        ("kprobe", calls, 0), ("kretprobe", calls, 0), ("line", calls, 0)]
    assert all(h.hits == calls for h in handles)       # every run of the line, the timed ones too
    assert [p.floor_hits for p in report.probes] == [calls] * 3


def test_a_probe_line_is_labelled_by_its_line_and_misses_are_counted(guest_bin: Path) -> None:
    """attach() returning an EventHandle labels the result with the line; a return
    probe with too few instances (r2 on fib's recursion) reports its misses."""
    report = measure(fib_machine(guest_bin, "10"),
                     lambda m: attach(m, "r2 fib", lambda ev: None, clock="host"),
                     repeats=1, best_of=1)
    (p,) = report.probes
    assert p.probe == "r2 fib"
    assert p.missed > 0 and p.hits + p.missed == 2 * fib(11) - 1
    assert any("missed" in w for w in report.warnings)


def test_pending_probe_on_a_library_is_measured(guest_bin: Path) -> None:
    """libc.so.6:malloc waits for libc; its twin and its floor arm when it maps."""
    report = measure(fib_machine(guest_bin, "80", "http", prog="parse.dyn"),
                     lambda m: register_kprobe(m, Kprobe("libc.so.6:malloc",
                                                         pre_handler=lambda kp, regs: None)),
                     repeats=1, best_of=1)
    (p,) = report.probes
    assert p.probe == "p libc.so.6:malloc"
    assert p.hits >= 1 and p.floor_hits == p.hits


# --- the busy-wait ---------------------------------------------------------------------------------
def busy(kp: Kprobe, regs: object) -> None:
    end = time.perf_counter_ns() + BUSY_NS
    while time.perf_counter_ns() < end:
        pass


def test_a_busy_wait_handler_shows_up_as_handler_us(guest_bin: Path) -> None:
    """A pre_handler that busy-waits 20 µs: handler_us's interval holds 20 µs (within
    ±10 µs), and the mechanism, the same kprobe with a no-op handler, is apart."""
    report = measure(fib_machine(guest_bin, "15"),
                     lambda m: register_kprobe(m, Kprobe("fib", pre_handler=busy)), repeats=3)
    (p,) = report.probes
    assert p.hits == 2 * fib(16) - 1 >= 1000
    want = BUSY_NS / 1000
    lo, hi = p.handler_us.ci95
    assert lo - want / 2 <= want <= hi + want / 2, p.handler_us
    assert p.mechanism_us.median < want / 2, p.mechanism_us
    assert p.per_hit_us.median > p.mechanism_us.median
    assert not any("spread" in w or "hits" in w for w in report.warnings), report.warnings


# --- the report ------------------------------------------------------------------------------------
def test_to_json_is_exactly_the_issue_object(guest_bin: Path) -> None:
    report = measure(fib_machine(guest_bin, "8"),
                     lambda m: register_kprobe(m, Kprobe("fib", pre_handler=lambda kp, regs: None)),
                     repeats=2, best_of=1)
    assert isinstance(report, OverheadReport)
    data = report.to_json()
    check_schema(data, SCHEMA)
    assert data["runs"] == 2
    assert data["probes"][0]["probe"] == "p fib"


def test_the_warning_fires_on_a_ten_hit_workload(guest_bin: Path) -> None:
    """fib 1 ten times: ten calls of fib, far under 1,000 hits."""
    report = measure(fib_machine(guest_bin, *["1"] * 10),
                     lambda m: register_kprobe(m, Kprobe("fib", pre_handler=lambda kp, regs: None)),
                     repeats=2, best_of=1)
    assert report.probes[0].hits == 10
    assert any("only 10 hits" in w and "bigger workload" in w for w in report.warnings), report.warnings


def test_bad_arguments_are_refused(guest_bin: Path) -> None:
    make = fib_machine(guest_bin, "3")
    with pytest.raises(ValueError, match="repeats"):
        measure(make, lambda m: None, repeats=0)
    with pytest.raises(ValueError, match="registered no probe"):
        measure(make, lambda m: None, repeats=1)


# --- the statistics --------------------------------------------------------------------------------
def test_the_bootstrap_interval_is_reproducible_and_holds_the_median() -> None:
    values = [1.0, 1.2, 0.9, 1.1, 5.0, 1.05, 0.95]
    a, b = bootstrap_ci(values), bootstrap_ci(list(values))
    assert a == b
    s = spread(values)
    assert s.ci95[0] <= s.median <= s.ci95[1]
    assert (s.min, s.max) == (0.9, 5.0)
    assert s.ci95[1] < 5.0                           # the median resists the outlier


def test_a_constant_has_no_spread() -> None:
    assert spread([2.5, 2.5, 2.5]) == Spread(2.5, 2.5, 2.5, (2.5, 2.5))
    with pytest.raises(ValueError):
        spread([])


def test_the_public_surface_is_all() -> None:
    """probes.overhead's ``__all__`` is exactly what it exports (as tests/test_exports.py
    checks for emu and probes)."""
    import probes.overhead as mod

    assert len(set(mod.__all__)) == len(mod.__all__)
    assert all(hasattr(mod, name) for name in mod.__all__)
    public = {n for n in vars(mod) if not n.startswith("_") and not isinstance(getattr(mod, n), type(mod))}
    assert public <= set(mod.__all__), public - set(mod.__all__)
    assert {"measure", "OverheadReport"} <= set(mod.__all__)
