"""The standard streams: stdin is streamed, a closed or full stdout is an errno.

Rules pinned (the reliability issue): the guest's reads of stdin read the host's
stdin when they happen, and no more than the guest asked (``yes | kprobe-emu run
head -1`` ends; ``sleep 100 | kprobe-emu run prog`` ends at once; ``< /dev/zero``
does not grow the host). The Python API takes bytes or a binary file object.
A closed stdout (``>&-``) or a full one (``/dev/full``) is ``EBADF``/``ENOSPC``
for the guest and no Python traceback, as natively.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from emu import Machine
from tests.guests import guest_bin as _guest_bin

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "kprobe_emu", "run"]


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


def _readv(safety: Path, stdin: object) -> str:
    m = Machine.from_elf(str(safety), ["safety", "readv"], stdin=stdin)  # type: ignore[arg-type]
    m.stdout = io.BytesIO()
    with m:
        assert m.run(timeout=60) == 0
    return m.stdout.getvalue().decode()


def test_stdin_bytes_and_file_objects(guest_bin: Path, tmp_path: Path) -> None:
    """bytes, a BytesIO and an open file are read alike (one readv of 4 + 64 bytes)."""
    data = b"0123456789" * 10
    (tmp_path / "in").write_bytes(data)
    assert _readv(guest_bin / "safety", data) == "readv: 68\n"
    assert _readv(guest_bin / "safety", io.BytesIO(data)) == "readv: 68\n"
    with open(tmp_path / "in", "rb") as f:
        assert _readv(guest_bin / "safety", f) == "readv: 68\n"


def test_stdin_stream_is_read_when_and_as_much_as_the_guest_reads(guest_bin: Path) -> None:
    """A pipe with 100 bytes: the guest's readv of 68 takes 68 and leaves 32 in the pipe.
    A pipe with 9 bytes and its writer open: readv returns 9 (it does not wait to fill
    the second vector, as pipe_read does not)."""
    r, w = os.pipe()
    with open(r, "rb", buffering=0) as stream:
        os.write(w, bytes(100))
        assert _readv(guest_bin / "safety", stream) == "readv: 68\n"
        assert len(os.read(r, 100)) == 32
        os.write(w, b"abcdefghi")
        watchdog = threading.Timer(20, os.close, (w,))      # never hang the suite
        watchdog.start()
        started = time.monotonic()
        try:
            assert _readv(guest_bin / "safety", stream) == "readv: 9\n"
        finally:
            watchdog.cancel()
        assert time.monotonic() - started < 10
    os.close(w)


@pytest.mark.skipif(shutil.which("yes") is None or not os.path.exists("/usr/bin/head"),
                    reason="needs yes and /usr/bin/head")
def test_yes_into_head_ends() -> None:
    """`yes | kprobe-emu run /usr/bin/head -1` prints y and ends (the guest reads a
    buffer's worth, never the endless rest)."""
    yes = subprocess.Popen(["yes"], stdout=subprocess.PIPE)
    try:
        done = subprocess.run([*CLI, "/usr/bin/head", "-1"], stdin=yes.stdout, capture_output=True,
                              timeout=60, cwd=ROOT)
    finally:
        yes.kill()
        yes.wait()
        assert yes.stdout is not None
        yes.stdout.close()
    assert (done.returncode, done.stdout) == (0, b"y\n")


def test_a_program_that_does_not_read_stdin_ends_at_once(guest_bin: Path) -> None:
    """`sleep 100 | kprobe-emu run fib 10`: nothing reads the pipe, nothing waits for it."""
    sleep = subprocess.Popen(["sleep", "100"], stdout=subprocess.PIPE)
    try:
        started = time.monotonic()
        done = subprocess.run([*CLI, str(guest_bin / "fib.static"), "10"], stdin=sleep.stdout,
                              capture_output=True, timeout=60, cwd=ROOT)
        assert time.monotonic() - started < 30
    finally:
        sleep.kill()
        sleep.wait()
        assert sleep.stdout is not None
        sleep.stdout.close()
    assert (done.returncode, done.stdout) == (55, b"fib(10) = 55\n")


_PEAK_OF_CHILD = """
import resource, subprocess, sys
with open("/dev/zero", "rb") as zero:
    done = subprocess.run(sys.argv[1:], stdin=zero, capture_output=True, timeout=120)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss << 10
print(done.returncode, peak, done.stdout.decode(), end="")
"""


def test_dev_zero_on_stdin_does_not_grow_the_host(guest_bin: Path) -> None:
    """256 MiB of /dev/zero through the guest's reads: the command's peak RSS stays
    far below it (it used to read all of stdin first: forever)."""
    done = subprocess.run([sys.executable, "-c", _PEAK_OF_CHILD, *CLI, str(guest_bin / "safety"),
                           "drain", "256"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    status, peak, out = done.stdout.split(" ", 2)
    assert (status, out) == ("0", "drained: 256 MiB\n"), done.stderr
    assert int(peak) < 160 << 20, f"peak RSS {int(peak) >> 20} MiB"


@pytest.mark.parametrize(("redirect", "expected"), [(">&-", "write: -1 errno 9"),
                                                    ("> /dev/full", "write: -1 errno 28")])
def test_closed_or_full_stdout_is_an_errno(guest_bin: Path, redirect: str, expected: str) -> None:
    """As natively: the guest's write fails with EBADF or ENOSPC, its status passes
    through, and the command prints no traceback (nor Python's failed flush at exit)."""
    safety = str(guest_bin / "safety")
    native = subprocess.run(["sh", "-c", f'"$0" write {redirect}', safety], capture_output=True,
                            text=True, timeout=60)
    emulated = subprocess.run(["sh", "-c", f'exec "$@" write {redirect}', "sh", *CLI, safety],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert native.stderr.strip() == expected
    assert (emulated.returncode, emulated.stderr.strip()) == (native.returncode, expected)


def test_full_stdout_after_a_fault_is_no_traceback(guest_bin: Path) -> None:
    """The fault report flushes stdout first; a full stdout does not turn that into a
    traceback: one line, status 139."""
    emulated = subprocess.run(["sh", "-c", 'exec "$@" fault 3 > /dev/full', "sh", *CLI,
                               str(guest_bin / "safety")],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert emulated.returncode == 139
    assert emulated.stderr.count("\n") == 1 and "guest fault" in emulated.stderr
