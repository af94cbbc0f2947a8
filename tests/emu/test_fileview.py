"""The practical file view (emu/linux/_fs.py and its file systems) and the path
system calls through it (issue 11).

Rules pinned: ``FsPolicy.system`` shows the system directories and ``/etc`` less
its secrets read-only, the working directory read-only unless writable, an
in-memory ``/tmp`` that never reaches the host and is bounded; ``--mount``
maps host trees; a path the host lacks is ENOENT and no denial, one it has
outside the view EACCES and a denial; no symlink or ``..`` leads out. The path
system calls give Linux's results on a host directory and on ``/tmp`` alike
(differential against native runs of guest/c/fileops.c), and coreutils,
findutils and tar work in a writable working directory as natively.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from emu import Machine
from emu.linux import KernelError
from emu.linux._fs import FsPolicy, Mount, parse_mount
from emu.linux._hostfs import is_secret

IS_ROOT = os.geteuid() == 0
# Lines a root native run answers differently (root passes permission bits).
_ROOT_LINES = ("open write 0400", "access W_OK", "write /proc/self/status", "Uid:")
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"}


def _emulate(argv: list[str], policy: FsPolicy, stdin: bytes = b"",
             seed: int = 0) -> tuple[int, bytes, bytes, Machine]:
    m = Machine.from_elf(argv[0], argv, env=ENV, stdin=stdin, fs=policy, seed=seed)
    m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
    status = m.run(timeout=120)
    return status, m.stdout.getvalue(), m.stderr.getvalue(), m


def _native(argv: list[str], cwd: Path, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    done = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, env=ENV, timeout=60)
    return done.returncode, done.stdout, done.stderr


def _comparable(out: bytes) -> list[str]:
    lines = out.decode().splitlines()
    return [line for line in lines if not (IS_ROOT and line.startswith(_ROOT_LINES))]


def _denials(m: Machine) -> list[str]:
    assert m.kernel is not None
    return m.kernel.denied


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A working directory with a file, a subdirectory, and links out of it."""
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "hello.txt").write_text("hello\n")
    (tmp_path / "secret.txt").write_text("outside\n")
    (work / "escape").symlink_to(tmp_path / "secret.txt")
    (work / "dotdot").symlink_to("../secret.txt")
    (work / "shadow").symlink_to("/etc/shadow")
    return work


# --- parse_mount -----------------------------------------------------------------------
@pytest.mark.parametrize(("text", "mount"), [
    ("/data", Mount("/data", "/data", False)),
    ("/data:rw", Mount("/data", "/data", True)),
    ("/data:/mnt", Mount("/data", "/mnt", False)),
    ("/data:/mnt:ro", Mount("/data", "/mnt", False)),
    ("rel/dir:/mnt:rw", Mount("rel/dir", "/mnt", True)),
])
def test_parse_mount(text: str, mount: Mount) -> None:
    """HOST[:GUEST][:ro|rw]: GUEST defaults to HOST, the mode to ro."""
    assert parse_mount(text) == mount


@pytest.mark.parametrize("text", ["", ":/mnt", "/a:/b:/c", "/a:mnt", "/a:/b:xx"])
def test_parse_mount_rejects(text: str) -> None:
    """A bad mount is a ValueError with one line naming the text."""
    with pytest.raises(ValueError) as info:
        parse_mount(text)
    assert repr(text) in str(info.value) and "\n" not in str(info.value)


# --- the policy's host paths ------------------------------------------------------------
def test_system_view_shows_system_dirs_and_etc_read_only(scratch: Path) -> None:
    policy = FsPolicy.system(str(scratch))
    assert policy.resolve("/etc/passwd", "/") == os.path.realpath("/etc/passwd")
    assert policy.resolve("/bin/sh", "/") == os.path.realpath("/bin/sh")
    assert policy.resolve("hello.txt", policy.cwd) == str(scratch / "hello.txt")
    for path in ("/usr/new", "/etc/passwd", "new.txt"):
        with pytest.raises(KernelError) as info:
            policy.resolve(path, policy.cwd, write=True)
        assert info.value.errno == errno.EACCES
    assert FsPolicy.system(str(scratch), writable=True).resolve("new.txt", str(scratch), write=True) \
        == str(scratch / "new.txt")


@pytest.mark.parametrize("path", ["/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh/sshd_config",
                                  "/etc/ssl/private/x.pem", "/etc/x/server.key", "shadow"])
def test_system_view_hides_secrets(scratch: Path, path: str) -> None:
    """/etc less its secrets, also through a symlink in the working directory:
    EACCES where the host has one, ENOENT where it has none."""
    policy = FsPolicy.system(str(scratch))
    with pytest.raises(KernelError) as info:
        policy.resolve(path, policy.cwd)
    host = path if path.startswith("/") else "/etc/shadow"
    assert info.value.errno == (errno.EACCES if os.path.lexists(host) else errno.ENOENT)
    assert is_secret(host)
    assert policy.allows("/etc/passwd", write=False) and not policy.allows(host, write=False)


def test_allows_code_system_dirs_cwd_and_mounts(scratch: Path, tmp_path: Path) -> None:
    """Code may come from the system directories, the working directory and the
    mounts; not from /etc, not from elsewhere."""
    (tmp_path / "lib").mkdir()
    policy = FsPolicy.system(str(scratch), mounts=[Mount(str(tmp_path / "lib"), "/opt/lib")])
    assert policy.allows_code(os.path.realpath("/lib64/ld-linux-x86-64.so.2"))
    assert policy.allows_code(os.path.realpath("/usr/bin/ls"))
    assert policy.allows_code(str(scratch / "prog"))
    assert policy.allows_code(str(tmp_path / "lib" / "libx.so"))
    assert not policy.allows_code("/etc/ld.so.cache")
    assert not policy.allows_code(str(tmp_path / "secret.txt"))


@pytest.mark.parametrize("path", ["../secret.txt", "escape", "dotdot", "sub/../../secret.txt"])
def test_no_escape_from_the_working_directory(scratch: Path, path: str) -> None:
    """``..`` and symlinks are resolved in the guest's namespace: out of the view
    is EACCES, whatever the host would follow."""
    policy = FsPolicy.system(str(scratch), writable=True)
    with pytest.raises(KernelError) as info:
        policy.resolve(path, policy.cwd)
    assert info.value.errno == errno.EACCES


def test_mounts_map_host_trees(scratch: Path, tmp_path: Path) -> None:
    """A mount sits at its guest path, read-only unless rw, in both views; a
    missing host path is an error naming it."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "x").write_text("x")
    for policy in (FsPolicy.system(str(scratch), mounts=[Mount(str(data), "/mnt/data")]),
                   FsPolicy(str(scratch), mounts=[Mount(str(data), "/mnt/data")])):
        assert policy.resolve("/mnt/data/x", "/") == str(data / "x")
        with pytest.raises(KernelError):
            policy.resolve("/mnt/data/y", "/", write=True)
    rw = FsPolicy(None, mounts=[parse_mount(f"{data}:/d:rw")])
    assert rw.resolve("/d/y", "/", write=True) == str(data / "y")
    with pytest.raises(FileNotFoundError, match="no-such"):
        FsPolicy.system(str(scratch), mounts=[Mount(str(tmp_path / "no-such"), "/m")])


# --- through the guest: denials and absences -------------------------------------------
def test_absent_path_is_enoent_not_a_denial(guest_bin: Path, scratch: Path) -> None:
    """A path the host lacks is ENOENT and nothing is reported; one it has outside
    the view is EACCES and reported once."""
    sysprobe = str(guest_bin / "sysprobe")
    policy = FsPolicy.system(str(scratch), files=[sysprobe])
    missing = str(scratch.parent / "no-such-dir" / "file")
    status, out, _err, m = _emulate([sysprobe, "cat", missing], policy)
    assert (status, out.decode()) == (1, f"open {missing}: errno {errno.ENOENT}\n")
    assert _denials(m) == []
    outside = str(scratch.parent / "secret.txt")
    policy = FsPolicy.system(str(scratch), files=[sysprobe])
    status, out, _err, m = _emulate([sysprobe, "cat", outside], policy)
    assert (status, out.decode()) == (1, f"open {outside}: errno {errno.EACCES}\n")
    assert _denials(m) == [outside]


def test_tmp_is_in_memory_and_bounded(scratch: Path) -> None:
    """/tmp is the run's own: a file written there is not on the host, and past
    its size the guest gets ENOSPC."""
    name = f"/tmp/kprobe-emu-test-{os.getpid()}"
    policy = FsPolicy.system(str(scratch), tmp_size=64 << 10)
    status, out, err, _m = _emulate(["/bin/sh", "-c", f"echo in memory > {name}; cat {name}; "
                                     f"head -c 100000 /dev/zero > {name}.big; echo $?"], policy)
    assert not os.path.exists(name) and not os.path.exists(name + ".big")
    assert out == b"in memory\n1\n" and b"No space left on device" in err
    assert policy.memfs.used <= policy.memfs.limit


def test_getcwd_is_the_guests_path(scratch: Path, tmp_path: Path) -> None:
    """getcwd, /proc/self/cwd and relative paths name guest paths, in a mount too."""
    data = tmp_path / "data"
    (data / "in").mkdir(parents=True)
    policy = FsPolicy.system(str(scratch), mounts=[Mount(str(data), "/srv")])
    status, out, _err, m = _emulate(
        ["/bin/sh", "-c", "cd /srv/in && /bin/pwd -P && readlink /proc/self/cwd && cd .. && ls"], policy)
    assert (status, out.decode()) == (0, "/srv/in\n/srv/in\nin\n")


@pytest.mark.parametrize("where", ["/tmp", "/dev", "/proc", "/proc/self/fd", "/", "."])
def test_getdents_on_every_directory_kind(scratch: Path, where: str) -> None:
    """ls -a lists every kind of directory: the host's, /tmp, /dev, /proc, the
    directories above a mount, with . and .. first."""
    status, out, _err, m = _emulate(["/bin/ls", "-a", "-1", "-U", where], FsPolicy.system(str(scratch)))
    names = out.decode().split()
    assert status == 0 and names[:2] == [".", ".."], out
    expected = {"/tmp": set(), "/dev": {"null", "zero", "urandom", "shm", "fd"},
                "/proc": {"self", "meminfo", "cpuinfo"}, "/proc/self/fd": {"0", "1", "2"},
                "/": {"usr", "etc", "tmp", "proc", "dev", scratch.parts[1]},
                ".": {"hello.txt", "sub", "escape"}}[where]
    assert expected <= set(names)
    assert _denials(m) == []


# --- the path system calls, against native runs ---------------------------------------------
@pytest.mark.parametrize("flavour", ["static", "dyn"])
@pytest.mark.parametrize("where", ["host", "tmp"])
def test_path_syscalls_as_linux(guest_bin: Path, tmp_path: Path, flavour: str, where: str) -> None:
    """mkdir, open O_CREAT/O_EXCL with the umask, symlink, link, renameat2
    (NOREPLACE, EXCHANGE), utimensat (UTIME_OMIT), truncate, chmod, faccessat2,
    getdents64, fchdir, unlinkat and their errnos: the same lines as natively, in
    a writable host directory and in the in-memory /tmp."""
    prog = str(guest_bin / f"fileops.{flavour}")
    native_dir = tmp_path / "native"
    native_dir.mkdir()
    status, native, _ = _native([prog, str(native_dir)], native_dir)
    assert status == 0
    work = tmp_path / "emulated"
    work.mkdir()
    policy = FsPolicy.system(str(work), writable=True, files=[prog])
    status, out, err, m = _emulate([prog, "." if where == "host" else "/tmp"], policy)
    assert (status, err) == (0, b"")
    assert _comparable(out) == _comparable(native)
    assert _denials(m) == []
    if IS_ROOT and where == "tmp":          # the guest is uid 1000: permission bits hold
        assert "open write 0400: errno 13" in out.decode()


def test_memfd_as_linux(guest_bin: Path, tmp_path: Path) -> None:
    """memfd_create: an in-memory file named /memfd:NAME (deleted), reopened by
    /proc/self/fd/N, truncated, flags checked: the same lines as natively."""
    prog = str(guest_bin / "fileops.static")
    status, native, _ = _native([prog, "memfd"], tmp_path)
    assert status == 0
    status, out, _err, _m = _emulate([prog, "memfd"], FsPolicy.system(str(tmp_path), files=[prog]))
    assert (status, out) == (0, native)


# --- real programs in a writable working directory --------------------------------------------
_TREE = {"a/one.txt": "3\n1\n2\n", "a/b/two.txt": "two\n", "c.txt": "see\n"}


def _make_tree(root: Path) -> None:
    for name, text in _TREE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "link").symlink_to("a/one.txt")


def _snapshot(root: Path) -> list[tuple[str, str, str]]:
    """Every name under root with its kind and content (or link target)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out.append((rel, "link", os.readlink(p)))
            elif p.is_dir():
                out.append((rel, "dir", ""))
            else:
                out.append((rel, "file", p.read_text(errors="replace")))
    return sorted(out)


COMMANDS = [
    ["find", "."],
    ["find", ".", "-type", "f", "-name", "*.txt"],
    ["mkdir", "-p", "x/y/z"],
    ["touch", "a/new", "c.txt"],
    ["ln", "-s", "a/b", "lb"],
    ["mv", "a/one.txt", "a/b/moved.txt"],
    ["mv", "c.txt", "/tmp/c.txt"],
    ["cp", "-r", "a", "copy"],
    ["rm", "-r", "a"],
    ["ls", "-a", "-R"],
    ["ls", "-la", "--time-style=+%s"],
    ["sort", "-S", "1K", "-T", "/tmp", "a/one.txt"],
    ["tar", "cf", "out.tar", "a", "link"],
    ["sh", "-c", "tar cf - a | (mkdir u && cd u && tar xf -) && find u"],
    ["du", "-a", "--apparent-size", "a"],
    ["stat", "-c", "%n %F %s %h", "a", "link", "c.txt"],
    ["readlink", "-f", "link"],
    ["realpath", "a/b/../one.txt"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_programs_as_natively(tmp_path: Path, argv: list[str]) -> None:
    """The same stdout, status and resulting tree as a native run in a copy."""
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    native_dir, emu_dir = tmp_path / "native", tmp_path / "emulated"
    for d in (native_dir, emu_dir):
        d.mkdir()
        _make_tree(d)
    program = os.path.realpath(shutil.which(argv[0]) or argv[0])
    want = _native([program, *argv[1:]], native_dir)
    if argv[:2] == ["mv", "c.txt"]:
        os.unlink("/tmp/c.txt")
    status, out, err, m = _emulate([program, *argv[1:]], FsPolicy.system(str(emu_dir), writable=True))
    assert status == want[0], err
    assert out.replace(bytes(emu_dir), b"DIR") == want[1].replace(bytes(native_dir), b"DIR")
    if argv[0] != "tar":                    # tar records times: the archives differ by them
        assert _snapshot(emu_dir) == _snapshot(native_dir)
    else:
        assert [e[:2] for e in _snapshot(emu_dir)] == [e[:2] for e in _snapshot(native_dir)]
    assert _denials(m) == []


def test_sort_uses_the_in_memory_tmp(tmp_path: Path) -> None:
    """sort spills to temporary files in /tmp (here: 2,000 lines with a 1 KiB
    buffer): the result equals native sort's, read-only working directory."""
    data = "".join(f"{(i * 7919) % 2000}\n" for i in range(2000))
    (tmp_path / "nums").write_text(data)
    want = _native(["sort", "-n", "nums"], tmp_path)
    policy = FsPolicy.system(str(tmp_path))
    status, out, _err, m = _emulate(["/usr/bin/sort", "-n", "-S", "1K", "nums"], policy)
    assert (status, out) == want[:2]
    assert _denials(m) == []


def test_a_lookup_outside_the_view_is_eacces_but_not_a_counted_denial(tmp_path: Path) -> None:
    """stat of an existing path outside the view (a shell's $OLDPWD): EACCES to the
    guest, a note for -v, not a denied access of the summary; an open is counted."""
    import io
    import shutil

    from emu import Machine
    from emu.linux import Diagnostics, FsPolicy

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("secret\n")
    inside = tmp_path / "inside"
    inside.mkdir()
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    diag = Diagnostics()
    m = Machine.from_elf(bash, ["bash", "-c", f"test -e {outside}; echo $?; cat {outside}/x"],
                         env={"PATH": "/usr/bin:/bin"}, fs=FsPolicy.system(str(inside)), diagnostics=diag)
    m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
    assert m.run() == 1
    assert m.stdout.getvalue() == b"1\n"
    assert diag.counts["denied"] == 1 and diag.summary() == "1 file access denied: run with -v"
    assert any("denied a lookup" in line for line in diag.messages("note"))
