"""The loader reads only regular files of bounded size, and code only from allowed places.

Rules pinned (the reliability issue): ``kprobe-emu run /dev/zero``, a FIFO, a huge
file, or a ``PT_INTERP`` naming ``/dev/urandom``, a FIFO or ``/etc/shadow`` is a
one-line ``LoadError`` at once (it used to read 2.7 GB in 9 s, or hang). An
interpreter is taken only from the system library directories or under
``fs_root``, and a denied one is "not allowed" whether it exists or not.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import pytest

from emu import LoadError, Machine
from emu._elfhdr import MAX_ELF_SIZE
from kprobe_emu.cli import main
from tests.guests import guest_bin as _guest_bin

INTERP = b"/lib64/ld-linux-x86-64.so.2"


@pytest.fixture(scope="module")
def guest_bin() -> Path:
    return _guest_bin()


def _load_error(path: str | Path, **options: object) -> str:
    started = time.monotonic()
    with pytest.raises(LoadError) as info:
        Machine.from_elf(str(path), **options)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5, "a refused file must be refused at once"
    message = str(info.value)
    assert "\n" not in message
    return message


def _with_interp(guest_bin: Path, tmp_path: Path, interp: bytes) -> Path:
    """fib.dyn with PT_INTERP replaced (at most as long as the original)."""
    data = (guest_bin / "fib.dyn").read_bytes()
    assert INTERP in data and len(interp) <= len(INTERP)
    path = tmp_path / f"interp-{len(list(tmp_path.iterdir()))}"
    path.write_bytes(data.replace(INTERP, interp.ljust(len(INTERP), b"\0"), 1))
    return path


def test_devices_and_fifos_are_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file (a character device)" in _load_error("/dev/zero")
    assert "not a regular file (a character device)" in _load_error("/dev/urandom")
    assert "not a regular file (a FIFO)" in _load_error(fifo)
    assert "not a regular file (a directory)" in _load_error(tmp_path)


def test_cli_on_dev_zero_is_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "/dev/zero"]) == 127
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "not a regular file" in err


def test_huge_file_is_refused_unread(tmp_path: Path) -> None:
    """A sparse file past MAX_ELF_SIZE (1 GiB) with the ELF magic: refused by its size."""
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.write(b"\x7fELF")
        f.truncate(MAX_ELF_SIZE + 1)
    assert "too big to load" in _load_error(big)


def test_non_elf_file_is_not_read_past_its_magic(tmp_path: Path) -> None:
    """A big file without the magic is refused after four bytes."""
    data = tmp_path / "data"
    with open(data, "wb") as f:
        f.truncate(512 << 20)
    assert "not an ELF file" in _load_error(data)


@pytest.mark.parametrize("interp", [b"/dev/urandom", b"/etc/shadow", b"/etc/no-such-file", b"/dev/zero"])
def test_interpreter_outside_library_dirs_is_not_allowed(guest_bin: Path, tmp_path: Path,
                                                         interp: bytes) -> None:
    """The same words whether the path exists or not: nothing is revealed about it."""
    message = _load_error(_with_interp(guest_bin, tmp_path, interp))
    assert f"interpreter {interp.decode()} (PT_INTERP) is not allowed" in message
    assert "cannot read" not in message and "regular" not in message


def test_interpreter_fifo_is_not_allowed(guest_bin: Path, tmp_path: Path) -> None:
    """A FIFO outside the allowed places is not allowed; one inside fs_root is not a
    regular file. Neither waits for a writer."""
    fifo = Path("/tmp") / f"kprobe-emu-fifo-{os.getpid()}"
    os.mkfifo(fifo)
    try:
        exe = _with_interp(guest_bin, tmp_path, os.fsencode(fifo))
        assert "is not allowed" in _load_error(exe)
        assert "not a regular file (a FIFO)" in _load_error(exe, fs_root="/tmp")
    finally:
        fifo.unlink()


def test_interpreter_under_fs_root_loads(guest_bin: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative PT_INTERP resolved into fs_root is allowed (and runs); the same file
    without fs_root is not."""
    real = os.path.realpath(INTERP)
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(real, root / "ld.so")
    exe = _with_interp(guest_bin, tmp_path, b"ld.so")
    monkeypatch.chdir(root)
    assert "is not allowed" in _load_error(exe)
    m = Machine.from_elf(str(exe), ["fib", "10"], fs_root=str(root))
    m.stdout = io.BytesIO()
    with m:
        assert m.run(timeout=60) == 55
    assert m.stdout.getvalue() == b"fib(10) = 55\n"


def test_interpreter_missing_in_library_dir_is_not_found(guest_bin: Path, tmp_path: Path) -> None:
    message = _load_error(_with_interp(guest_bin, tmp_path, b"/lib64/no-such-ld.so"))
    assert "/lib64/no-such-ld.so (PT_INTERP) not found" in message
