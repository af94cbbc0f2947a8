"""`kprobe-emu demo`: the kernel's kretprobe example, output format pinned."""

from __future__ import annotations

import re
import subprocess
import sys

from kprobe_emu.cli import main
from kprobe_emu.demo import run_demo

LINE = re.compile(r"^open_file: return val = (-\d+) \(duration = (\d+) ns\)$")


def test_demo_prints_failed_calls_and_the_missed_count() -> None:
    lines: list[str] = []
    rp = run_demo(calls=100, out=lines.append)
    failures = [LINE.match(line) for line in lines if line.startswith("open_file:")]
    assert len(failures) == 22 and all(failures)
    assert {int(f.group(1)) for f in failures} == {-2, -13}
    assert all(int(f.group(2)) > 0 for f in failures)
    assert lines[0].startswith("Planted return probe at open_file: 0x")
    assert lines[-1] == "Missed probing 0 instances of open_file"
    assert rp.nmissed == 0


def test_demo_command_runs_as_a_console_script(capsys) -> None:
    assert main(["demo", "--calls", "10"]) == 0
    out = capsys.readouterr().out
    assert "open_file: return val = -2 (duration = " in out
    assert out.rstrip().endswith("Missed probing 0 instances of open_file")


def test_bad_option_is_one_line_and_exit_2(capsys) -> None:
    assert main(["demo", "--calls", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--calls" in err


def test_module_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "kprobe_emu", "demo", "--calls", "5"],
                          capture_output=True, text=True, check=True)
    assert "Missed probing 0 instances of open_file" in proc.stdout


def test_demo_stacktrace_shows_symbolized_callers(capsys) -> None:
    assert main(["demo", "--calls", "4", "--stacktrace"]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("open_file: return val"))
    assert lines[i + 1].strip().startswith("open_loop+0x")
    assert not any("trampoline" in line for line in lines)
