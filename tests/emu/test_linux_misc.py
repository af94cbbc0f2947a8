"""Kinds of open files and the calls programs make in passing (``emu/linux/_eventfd.py``,
``_sys_sendfile.py``, ``_ioctl.py``, ``_sys_misc.py``, the standard streams of ``_files.py``).

Rules pinned, differentially against native runs of ``guest/c/fdkinds.c`` and of
raw calls (``guest/c/hostile.c``): the standard streams are pipes unless they
are the host's terminal, then character devices that answer ``TCGETS`` (so
``isatty`` is true only for a terminal, and ``wc`` formats as natively);
eventfd's counter, semaphore, non-blocking and blocking rules; ``sendfile`` and
``copy_file_range`` with offsets and positions; the generic ioctls. Sockets are
refused with ``EACCES`` and said once; descriptors are never sockets.
"""

from __future__ import annotations

import errno
import io
import os
import select
import shutil
import subprocess
from pathlib import Path

import pytest

import emu.linux._eventfd
import emu.linux._sys_misc
import emu.linux._sys_sendfile  # noqa: F401  (register handlers)
from emu import Machine
from emu.linux._eventfd import EFD_NONBLOCK, EFD_SEMAPHORE, EventFd
from emu.linux._pipe import WouldBlock
from emu.linux._registry import KernelError
from tests.emu.test_linux_sysinfo import Guest
from tests.guests import assert_as_linux

SOURCE = Path(__file__).resolve().parents[2] / "guest" / "c" / "fdkinds.c"


@pytest.fixture(scope="module")
def fdkinds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build guest/c/fdkinds.c")
    out = tmp_path_factory.mktemp("fdkinds") / "fdkinds"
    subprocess.run(["gcc", "-O1", "-g", "-Wall", "-static", "-pthread", "-o", str(out), str(SOURCE)],
                   check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def hostile(guest_bin: Path) -> Path:
    return guest_bin / "hostile"


def _emulate(program: Path, args: list[str], cwd: Path, stdin: bytes = b"",
             stdout: object = None) -> tuple[int, bytes, Machine]:
    m = Machine.from_elf(str(program), [program.name, *args], stdin=stdin, fs_root=str(cwd),
                         fs_writable=True)
    m.stdout = stdout if stdout is not None else io.BytesIO()
    m.stderr = io.BytesIO()
    status = m.run(timeout=60)
    out = m.stdout.getvalue() if isinstance(m.stdout, io.BytesIO) else b""
    return status, out, m


@pytest.mark.parametrize("mode", ["std", "eventfd", "copy", "ioctl"])
def test_file_kinds_behave_as_natively(fdkinds: Path, tmp_path: Path, mode: str) -> None:
    """Each scenario of fdkinds.c prints the same lines emulated as natively, in
    an empty writable directory, standard streams on pipes."""
    (tmp_path / "native").mkdir()
    (tmp_path / "emulated").mkdir()
    native = subprocess.run([str(fdkinds), mode], input=b"hello", capture_output=True,
                            cwd=tmp_path / "native", timeout=60)
    status, out, m = _emulate(fdkinds, [mode], tmp_path / "emulated", stdin=b"hello")
    assert (status, out.decode()) == (native.returncode, native.stdout.decode())
    assert not m.kernel.diagnostics.entries        # type: ignore[union-attr]


def _drain(fd: int) -> bytes:
    out = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def test_a_terminal_is_a_character_device(fdkinds: Path, tmp_path: Path) -> None:
    """Standard output on the host's terminal (a pty) is S_IFCHR, isatty, answers
    TCGETS and TIOCGWINSZ, as natively; the pipes around it stay pipes."""
    master, slave = os.openpty()
    try:
        native = subprocess.run([str(fdkinds), "std"], input=b"", stdout=slave,
                                stderr=subprocess.PIPE, timeout=60)
        assert native.returncode == 0
        expected = _drain(master)
        with open(slave, "wb", buffering=0, closefd=False) as tty:
            status, _, _m = _emulate(fdkinds, ["std"], tmp_path, stdout=tty)
        assert status == 0
        got = _drain(master)
    finally:
        os.close(master)
        os.close(slave)
    assert b"fd 1: chr isatty=1" in expected
    assert got == expected


def test_wc_on_a_pipe_formats_as_natively() -> None:
    """wc pads its counts to 7 columns when its input is not a regular file."""
    data = b"ab cd\nef gh i\n"
    native = subprocess.run(["wc"], input=data, capture_output=True, timeout=60).stdout
    m = Machine.from_elf("/usr/bin/wc", ["wc"], stdin=data, env={})
    m.stdout = io.BytesIO()
    assert m.run(timeout=60) == 0
    assert m.stdout.getvalue() == native == b"      2       5      14\n"


# --- eventfd as an open file ------------------------------------------------------------------
def test_eventfd_readiness_for_poll() -> None:
    """Readable while the counter is non-zero; writable below ULLONG_MAX - 1
    (``eventfd_poll``); the queue to wait on is woken by every change."""
    f = EventFd(0, EFD_NONBLOCK, 1000, 1000)
    assert f.poll_ready() == (False, True)
    with pytest.raises(KernelError) as read_empty:
        f.read(8)
    assert read_empty.value.errno == errno.EAGAIN
    assert isinstance(read_empty.value, WouldBlock) and read_empty.value.queue is f.poll_queue()
    f.write(((1 << 64) - 2).to_bytes(8, "little"))
    assert f.poll_ready() == (True, False)
    f.read(8)
    assert f.poll_ready() == (False, True)
    s = EventFd(3, EFD_SEMAPHORE, 1000, 1000)
    assert [s.read(8), s.count] == [(1).to_bytes(8, "little"), 2]


# --- sockets -----------------------------------------------------------------------------------
def test_sockets_are_refused_and_said_once(hostile: Path) -> None:
    """socket and socketpair fail with EACCES, logged once per run (kind socket)."""
    m = Machine.from_elf(str(hostile), ["hostile", "41", "2", "1", "0", ",", "41", "1", "1", "0", ",",
                                        "53", "1", "1", "0", "buf"])
    m.stdout = io.BytesIO()
    assert m.run(max_insns=10**7) == 0
    assert m.stdout.getvalue().split() == [b"-13"] * 3
    diag = m.kernel.diagnostics  # type: ignore[union-attr]
    assert len(diag.messages("socket")) == 1 and "sockets are not emulated" in diag.messages()[0]
    assert diag.summary() == "1 socket refused: run with -v"


# Raw calls whose results do not depend on the host's privileges.
DIFFERENTIAL = {
    "getsockname on a pipe": ["51", "1", "buf", "buf"],
    "getsockname bad fd": ["51", "99", "buf", "buf"],
    "connect on a pipe": ["42", "1", "buf", "16"],
    "listen, accept4, shutdown": ["50", "1", "1", ",", "288", "1", "0", "0", "0", ",", "48", "1", "0"],
    "eventfd2 bad flags": ["290", "0", "0x40"],
    "eventfd read 4 bytes, empty, write, read": ["290", "0", "0x800", ",", "0", "3", "buf", "4", ",",
                                                 "0", "3", "buf", "8", ",", "1", "3", "@ABCDEFGH", "8",
                                                 ",", "1", "3", "@ABCDEFGH", "9", ",",
                                                 "0", "3", "buf", "8"],
    "copy_file_range flags": ["326", "0", "0", "1", "0", "5", "1"],
    "copy_file_range from a pipe": ["326", "0", "0", "1", "0", "5", "0"],
    "sendfile bad fd": ["40", "1", "99", "0", "1"],
    "mincore misaligned": ["27", "0x401001", "4096", "buf"],
    "mincore unmapped": ["27", "0x10000", "4096", "buf"],
    "prctl unknown option": ["157", "0x7fff"],
    "prctl PR_SET_NAME, PR_GET_DUMPABLE": ["157", "15", "@hello", ",", "157", "3"],
    "PR_CAPBSET_READ past the last": ["157", "23", "99"],
    "getgroups -1": ["115", "-1", "buf"],
    "getpriority bad which, no such pid": ["140", "7", "0", ",", "140", "0", "0x3ffffff0"],
    "getcpu": ["309", "buf", "buf", "0"],
    "TCGETS on a pipe": ["16", "1", "0x5401", "buf"],
    "TIOCGWINSZ on a pipe": ["16", "0", "0x5413", "buf"],
    "ioctl bad fd": ["16", "99", "0x5401", "buf"],
}


def test_errors_as_linux_gives_them(hostile: Path, tmp_path: Path) -> None:
    assert_as_linux(hostile, tmp_path, DIFFERENTIAL)


# --- credentials, prctl, mincore (an unprivileged user: not differential, the host is root) --------
def test_an_unprivileged_users_credentials(hostile: Path) -> None:
    """One group, the user's; set*id only to the ids it has; setgroups EPERM."""
    guest = Guest(hostile)
    uid = guest.k.uid
    assert guest.call("getgroups", 0, 0) == 1
    assert guest.call("getgroups", 4, guest.buf) == 1
    assert int.from_bytes(guest.read(4), "little") == guest.k.gid
    assert guest.call("setgroups", 0, 0) == -errno.EPERM
    assert guest.call("setuid", uid) == 0
    assert guest.call("setuid", 0) == -errno.EPERM
    assert guest.call("setresuid", (1 << 32) - 1, uid, (1 << 32) - 1) == 0
    assert guest.call("getresuid", guest.buf, guest.buf + 4, guest.buf + 8) == 0
    assert guest.read(12) == uid.to_bytes(4, "little") * 3


def test_prctl_names_the_thread(hostile: Path) -> None:
    """PR_SET_NAME sets the calling thread's comm (15 bytes at most), PR_GET_NAME reads it."""
    guest = Guest(hostile)
    guest.write(b"a-rather-long-thread-name\0")
    assert guest.call("prctl", 15, guest.buf, 0, 0, 0) == 0
    assert guest.m.current_task.comm == "a-rather-long-t"
    assert guest.call("prctl", 16, guest.buf + 64, 0, 0, 0) == 0
    assert guest.read(16, 64) == b"a-rather-long-t\0"
    assert guest.call("prctl", 0x53564D41, 0, 0, 0, 0) == -errno.EINVAL       # PR_SET_VMA


def test_mincore_reports_mapped_pages_resident(hostile: Path) -> None:
    guest = Guest(hostile)
    assert guest.call("mincore", guest.buf, 0x1000, guest.buf + 0x100) == 0
    assert guest.read(1, 0x100) == b"\1"
    assert guest.call("mincore", guest.buf, 0x10_0000_0000, guest.buf) == -errno.ENOMEM


def test_a_network_socket_is_said_once_a_local_one_only_noted(tmp_path: Path) -> None:
    """EACCES for both; AF_INET is in the summary ("1 socket refused"), AF_UNIX (the
    C library asking nscd for a user name) only a note for -v."""
    import io
    import shutil

    from emu import Machine
    from emu.linux import Diagnostics, FsPolicy

    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("python3 is not installed")
    script = ("import socket\n"
              "for family in (socket.AF_UNIX, socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):\n"
              "    try: socket.socket(family)\n"
              "    except PermissionError as e: print(e.errno)\n")
    diag = Diagnostics()
    m = Machine.from_elf(python, ["python3", "-c", script], env={"PATH": "/usr/bin:/bin"},
                         fs=FsPolicy.system(str(tmp_path)), diagnostics=diag)
    m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
    assert m.run() == 0, m.stderr.getvalue()  # type: ignore[attr-defined]
    assert m.stdout.getvalue() == b"13\n13\n13\n13\n"  # type: ignore[attr-defined]
    assert diag.counts["socket"] == 1 and "1 socket refused" in (diag.summary() or "")
    assert diag.messages("note") == \
        ["a local socket (AF_UNIX) was refused (EACCES): sockets are not emulated"]
