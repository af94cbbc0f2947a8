"""Deny-by-default file access (emu/linux/_fs.py).

Rules pinned (issue #4): the guest reads only its interpreter, the system
library directories and the directory mapped with ``fs_root`` (read-only unless
``fs_writable``); ``..`` and symlinks cannot lead out; a denied open returns
-EACCES to the guest and is reported once; a path the host lacks is -ENOENT
and no denial (issue 11).
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest

from emu import Machine
from emu.linux import FsPolicy, KernelError

EACCES = errno.EACCES


def _sysprobe(guest_bin: Path, *args: str, **options: object) -> tuple[int, str, Machine]:
    m = Machine.from_elf(str(guest_bin / "sysprobe"), ["sysprobe", *args], **options)  # type: ignore[arg-type]
    m.stdout = io.BytesIO()
    status = m.run()
    return status, m.stdout.getvalue().decode(), m


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A mapped directory with a file, a subdirectory, and links out of it."""
    r = tmp_path / "root"
    (r / "sub").mkdir(parents=True)
    (r / "hello.txt").write_text("hello from the root\n")
    (tmp_path / "secret.txt").write_text("outside\n")
    (r / "escape").symlink_to(tmp_path / "secret.txt")
    (r / "inside").symlink_to(r / "hello.txt")
    return r


# --- the policy itself -------------------------------------------------------------------
def test_policy_reads_system_libraries_only(root: Path) -> None:
    """Without a root: libraries readable, not writable; anything else EACCES."""
    policy = FsPolicy()
    libc = os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")
    assert policy.resolve("/lib/x86_64-linux-gnu/libc.so.6", "/") == libc
    for path, write in [("/etc/passwd", False), (str(root / "hello.txt"), False), (libc, True)]:
        with pytest.raises(KernelError) as info:
            policy.resolve(path, "/", write=write)
        assert info.value.errno == EACCES


def test_policy_root_is_read_only_unless_writable(root: Path) -> None:
    ro, rw = FsPolicy(str(root)), FsPolicy(str(root), writable=True)
    assert ro.resolve("hello.txt", ro.cwd) == str(root / "hello.txt")
    with pytest.raises(KernelError):
        ro.resolve("new.txt", ro.cwd, write=True)
    assert rw.resolve("new.txt", rw.cwd, write=True) == str(root / "new.txt")


@pytest.mark.parametrize("path", ["../secret.txt", "sub/../../secret.txt", "escape", "/..//etc/passwd"])
def test_policy_no_escape(root: Path, path: str) -> None:
    """``..`` and symlinks are resolved before the check: no way out of the root."""
    policy = FsPolicy(str(root), writable=True)
    with pytest.raises(KernelError) as info:
        policy.resolve(path, policy.cwd)
    assert info.value.errno == EACCES


def test_policy_symlink_inside_root_is_fine(root: Path) -> None:
    policy = FsPolicy(str(root))
    assert policy.resolve("inside", policy.cwd) == str(root / "hello.txt")
    assert policy.resolve("inside", policy.cwd, follow=False) == str(root / "inside")


# --- through the guest ---------------------------------------------------------------
def test_denied_open_is_eacces_and_reported(guest_bin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """open("/etc/passwd") without a root: the guest sees EACCES, the user a report."""
    status, out, m = _sysprobe(guest_bin, "cat", "/etc/passwd")
    assert (status, out) == (1, f"open /etc/passwd: errno {EACCES}\n")
    assert m.kernel is not None and m.kernel.denied == ["/etc/passwd"]
    assert capsys.readouterr().err == ""        # the guest's stderr is the guest's (issue 11)
    assert any("denied access to '/etc/passwd'" in line for line in m.kernel.diagnostics.messages("denied"))
    assert m.kernel.diagnostics.summary() == "1 file access denied: run with -v"


def test_absent_path_is_enoent_not_denied(guest_bin: Path) -> None:
    """A path the host does not have is ENOENT to the guest, and nothing is reported
    (outside the view or not: its absence is no secret and no denial)."""
    for path in ("/no/such/file", "/etc/no-such-file", "/lib/no-such-lib.so"):
        status, out, m = _sysprobe(guest_bin, "cat", path)
        assert (status, out) == (1, f"open {path}: errno {errno.ENOENT}\n")
        assert m.kernel is not None and m.kernel.denied == []


def test_guest_reads_files_under_root(guest_bin: Path, root: Path) -> None:
    """fs_root is the guest's working directory: a relative open lands inside it."""
    status, out, _m = _sysprobe(guest_bin, "cat", "hello.txt", fs_root=str(root))
    assert (status, out) == (0, "hello from the root\n")


@pytest.mark.parametrize("path", ["../secret.txt", "escape"])
def test_guest_cannot_escape_root(guest_bin: Path, root: Path, path: str) -> None:
    status, out, _m = _sysprobe(guest_bin, "cat", path, fs_root=str(root))
    assert (status, out) == (1, f"open {path}: errno {EACCES}\n")


def test_guest_writes_only_when_writable(guest_bin: Path, root: Path) -> None:
    """Read-only root: creating a file fails with EACCES and nothing appears on the host."""
    status, out, _m = _sysprobe(guest_bin, "write", "out.txt", "data", fs_root=str(root))
    assert (status, out) == (1, f"open out.txt: errno {EACCES}\n")
    assert not (root / "out.txt").exists()
    status, out, _m = _sysprobe(guest_bin, "write", "out.txt", "data", fs_root=str(root),
                                fs_writable=True)
    assert (status, out) == (0, "wrote 4 bytes\n")
    assert (root / "out.txt").read_text() == "data"
