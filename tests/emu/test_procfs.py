"""/proc and /dev of the file view (emu/linux/_procfs.py, _devfs.py): what the
guest reads there is made from the emulator's state, never the host's.

Rules pinned: /proc/self/maps lists the guest's own mappings
(``show_map_vma``'s layout); /proc/self is the process's own, /proc/<pid> any
process's of the run, another pid is ENOENT; status, fd/, exe, cwd say what the kernel object says;
meminfo follows mem_limit, cpuinfo has the one CPU sched_getaffinity reports;
/dev/urandom reads the seeded generator; /dev/null, zero and full behave as
drivers/char/mem.c; /dev/tty is ENXIO; the standard streams are /dev/std*.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest

from emu import Machine
from emu.linux import KernelError
from emu.linux._fs import FsPolicy
from emu.linux._kernel import Kernel

ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


def _loaded(tmp_path: Path, program: str = "/bin/true", mem_limit: int | None = None) -> Kernel:
    extra = {} if mem_limit is None else {"mem_limit": mem_limit}
    m = Machine.from_elf(program, [program], fs=FsPolicy.system(str(tmp_path)), **extra)  # type: ignore[arg-type]
    assert m.kernel is not None
    return m.kernel


def _read(k: Kernel, path: str) -> str:
    f = k.fs.open(k, path, None, 0, 0)
    try:
        return f.read(1 << 20).decode()
    finally:
        f.close()


def _sh(tmp_path: Path, script: str, seed: int = 0) -> tuple[int, str, Machine]:
    m = Machine.from_elf("/bin/sh", ["sh", "-c", script], env=ENV, fs=FsPolicy.system(str(tmp_path)),
                         seed=seed)
    m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
    status = m.run(timeout=60)
    return status, m.stdout.getvalue().decode(), m


def test_maps_lists_the_guests_mappings(tmp_path: Path) -> None:
    """One line per region, start-end perms offset dev inode, the name from column 74."""
    k = _loaded(tmp_path)
    lines = _read(k, "/proc/self/maps").splitlines()
    regions = k.m.mem.regions
    assert len(lines) == len(regions)
    for line, r in zip(lines, regions, strict=True):
        span, perms = line.split()[:2]
        assert span == f"{r.start:08x}-{r.end:08x}" and len(perms) == 4 and perms.endswith("p")
        if r.name != "[anon]":
            assert line[73:] == r.name
    assert any(line.endswith("[stack]") for line in lines)
    assert any(line.endswith("/true") for line in lines)


def test_self_is_the_own_pid_and_other_pids_are_absent(tmp_path: Path) -> None:
    k = _loaded(tmp_path)
    assert k.fs.lookup(k, "/proc/self", follow=False).readlink() == str(k.pid)
    for path in ("/proc/self/exe", f"/proc/{k.pid}/exe"):
        assert k.fs.lookup(k, path, follow=False).readlink() == k.exe_path
    assert k.fs.lookup(k, "/proc/self/exe").guest == k.exe_path
    assert k.fs.lookup(k, "/proc/self/cwd", follow=False).readlink() == str(tmp_path)
    with pytest.raises(KernelError) as info:
        k.fs.lookup(k, f"/proc/{k.pid + 1}/status")
    assert info.value.errno == errno.ENOENT


def test_every_process_of_the_run_has_its_directory(tmp_path: Path) -> None:
    """A child reads its parent's /proc/<pid> (comm, fd/ through a cd), and /proc
    lists every pid."""
    status, out, m = _sh(tmp_path, "cat /proc/$$/comm; cd /proc/self/fd && ls; ls /proc | grep -c '^[0-9]'")
    assert (status, out) == (0, "sh\n0\n1\n2\n3\n")          # sh, ls, grep


def test_status_says_what_the_kernel_object_says(tmp_path: Path) -> None:
    k = _loaded(tmp_path)
    k.umask = 0o027
    status = dict(line.split(":\t", 1) for line in _read(k, "/proc/self/status").splitlines())
    assert status["Name"] == "true" and status["Umask"] == "0027"
    assert (status["Pid"], status["PPid"], status["Tgid"]) == (str(k.pid), str(k.ppid), str(k.pid))
    assert status["Uid"].split() == [str(k.uid)] * 4 and status["Gid"].split() == [str(k.gid)] * 4
    assert status["Threads"] == "1"
    assert status["VmRSS"].split() == [str(k.m.mem.mapped >> 10), "kB"]


def test_fd_directory_lists_the_descriptors(tmp_path: Path) -> None:
    """fd/N reads as the open file's path and reaches the file itself."""
    (tmp_path / "f.txt").write_text("data")
    k = _loaded(tmp_path)
    fd = k.files.install(k.fs.open(k, "f.txt", None, 0, 0))
    listing = k.fs.dir_stream(k, k.fs.lookup(k, "/proc/self/fd")).listing()
    assert [e.name for e in listing] == [".", "..", "0", "1", "2", str(fd)]
    assert k.fs.lookup(k, f"/proc/self/fd/{fd}", follow=False).readlink() == str(tmp_path / "f.txt")
    assert _read(k, f"/proc/self/fd/{fd}") == "data"
    assert k.fs.lookup(k, "/proc/self/fd/1", follow=False).readlink() == "pipe:[stdout]"
    with pytest.raises(KernelError):
        k.fs.lookup(k, f"/proc/self/fd/{fd + 1}")


def test_meminfo_follows_mem_limit_and_cpuinfo_one_cpu(tmp_path: Path) -> None:
    k = _loaded(tmp_path, mem_limit=256 << 20)
    meminfo = {line.split(":")[0]: line.split()[1] for line in _read(k, "/proc/meminfo").splitlines()}
    assert meminfo["MemTotal"] == str(256 << 10)
    assert int(meminfo["MemFree"]) == (k.m.mem.limit - k.m.mem.mapped) >> 10
    status, out, _m = _sh(tmp_path, "grep -c ^processor /proc/cpuinfo; nproc; grep -w proc /proc/filesystems")
    assert (status, out) == (0, "1\n1\nnodev\tproc\n")


def test_proc_is_read_only(tmp_path: Path) -> None:
    """Writing a /proc file or creating one is EACCES (the shell's redirection
    fails: 2), and no denial: /proc is the view's own."""
    status, out, m = _sh(tmp_path, "echo x > /proc/self/status; echo $?; touch /proc/new; echo $?")
    assert out == "2\n1\n"
    assert b"Permission denied" in m.stderr.getvalue()
    assert m.kernel is not None and m.kernel.denied == []


def test_urandom_is_seeded(tmp_path: Path) -> None:
    """The same seed reads the same bytes; another seed others."""
    script = "head -c 16 /dev/urandom | od -An -tx1"
    runs = [_sh(tmp_path, script, seed=s)[1] for s in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2] and len(runs[0].split()) == 16


def test_memory_devices(tmp_path: Path) -> None:
    """null reads nothing and takes all, zero reads zeros, full is ENOSPC to write,
    tty is ENXIO (no terminal), stdout is the standard output."""
    script = ("head -c 4 /dev/zero | od -An -tx1; cat /dev/null; echo gone > /dev/null; "
              "echo x > /dev/full || echo full $?; cat /dev/tty || echo tty $?; echo out > /dev/stdout")
    status, out, m = _sh(tmp_path, script)
    assert out == " 00 00 00 00\nfull 1\ntty 1\nout\n"
    assert m.stderr.getvalue().decode().count("I/O error") == 1       # dash says so of ENOSPC
    assert b"No such device or address" in m.stderr.getvalue()


def test_proc_lines_as_linux(guest_bin: Path, tmp_path: Path) -> None:
    """guest/c/fileops.c proc: State, Threads, a maps line, fd/ as a directory,
    ENOENT, /dev/tty ENXIO, the same as natively (but the uid lines as root)."""
    import subprocess

    prog = str(guest_bin / "fileops.static")
    native = subprocess.run([prog, "proc"], capture_output=True, env=ENV, cwd=tmp_path, timeout=60)
    m = Machine.from_elf(prog, [prog, "proc"], env=ENV, fs=FsPolicy.system(str(tmp_path), files=[prog]))
    m.stdout = io.BytesIO()
    assert m.run(timeout=60) == native.returncode == 0
    skip = ("Uid:", "write /proc/self/status") if os.geteuid() == 0 else ()
    keep = lambda text: [x for x in text.splitlines() if not x.startswith(skip)]  # noqa: E731
    assert keep(m.stdout.getvalue().decode()) == keep(native.stdout.decode())
    assert f"write /proc/self/status: errno {errno.EACCES}" in m.stdout.getvalue().decode()
