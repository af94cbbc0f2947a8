"""``kprobe-emu run``: passes the guest's output and status through, fails in one line.

Rules pinned (issue #4): the command exits with the program's status; --max-insns
and --timeout stop a runaway guest with a clear message; a file that cannot be
loaded gives one line on stderr, a non-zero status and no traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kprobe_emu.cli import main
from tests.guests import guest_bin as _guest_bin


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


def test_output_and_status_pass_through(guest_bin: Path, capfd: pytest.CaptureFixture[str]) -> None:
    status = main(["run", str(guest_bin / "fib.dyn"), "10", "12"])
    assert status == (55 + 144) % 256
    assert capfd.readouterr().out == "fib(10) = 55\nfib(12) = 144\n"


def test_load_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    """A non-ELF file (not a #! script either), run as a real command: one stderr
    line, status 127."""
    script = tmp_path / "not-elf"
    script.write_text("echo hi\n")
    done = subprocess.run([sys.executable, "-m", "kprobe_emu", "run", str(script)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 127
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "not an ELF file" in done.stderr and done.stdout == ""


def test_missing_binary(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nothing")]) == 127
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err


@pytest.mark.parametrize(("option", "words"), [
    (["--max-insns", "200000"], "instruction budget of 200000"),
    (["--timeout", "0.2"], "timeout of 0.2 s"),
])
def test_runaway_guest_is_stopped(guest_bin: Path, capfd: pytest.CaptureFixture[str],
                                  option: list[str], words: str) -> None:
    assert main(["run", *option, str(guest_bin / "fib.static"), "45"]) == 124
    err = capfd.readouterr().err
    assert words in err and "Traceback" not in err


def test_fs_root_option(guest_bin: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.txt").write_text("mapped\n")
    assert main(["run", "--fs-root", str(tmp_path), str(guest_bin / "sysprobe"), "cat", "in.txt"]) == 0
    assert capfd.readouterr().out == "mapped\n"
    assert main(["run", "--fs-root", str(tmp_path), str(guest_bin / "sysprobe"),
                 "write", "out.txt", "x"]) == 1
    assert main(["run", "--fs-root", str(tmp_path), "--fs-writable", str(guest_bin / "sysprobe"),
                 "write", "out.txt", "x"]) == 0
    assert (tmp_path / "out.txt").read_text() == "x"
