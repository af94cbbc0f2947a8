"""Processes: fork, vfork, posix_spawn, execve, wait4, pipes, SIGPIPE, SIGCHLD
(issue 11). Each guest scenario (guest/c/procs.c) runs natively and under the
emulator, which must agree on stdout and exit status."""

from __future__ import annotations

import io
import os
import stat
import subprocess
from pathlib import Path

import pytest

from emu import Machine
from emu._memory import PAGE, PROT_RW, Memory
from tests.guests import guest_bin

MODES = ["fork", "pipe", "exec", "vfork", "spawn", "sigpipe", "cloexec", "segv", "kill", "threadexec",
         "spawnfail"]


@pytest.fixture(scope="module")
def bindir() -> Path:
    return guest_bin()


def _native(bindir: Path, flavour: str, *args: str) -> tuple[int, bytes]:
    done = subprocess.run([f"./procs.{flavour}", *args], cwd=bindir, capture_output=True, timeout=60)
    return done.returncode, done.stdout


def _emulated(bindir: Path, flavour: str, *args: str, seed: int = 0) -> tuple[int, bytes, Machine]:
    m = Machine.from_elf(str(bindir / f"procs.{flavour}"), [f"./procs.{flavour}", *args],
                         fs_root=str(bindir), seed=seed)
    m.stdout, m.stderr = io.BytesIO(), io.BytesIO()
    status = m.run(max_insns=200_000_000, timeout=120)
    return status, m.stdout.getvalue(), m


@pytest.mark.parametrize("flavour", ["static", "dyn"])
@pytest.mark.parametrize("mode", MODES)
def test_scenario_as_natively(bindir: Path, flavour: str, mode: str) -> None:
    """Same stdout and status as a native run, for static and dynamic builds."""
    status, out, _m = _emulated(bindir, flavour, mode)
    assert (status, out) == _native(bindir, flavour, mode)


def test_a_poll_timeout_is_not_stretched_by_wakes(bindir: Path) -> None:
    """poll(POLLOUT, 5 ms) on a full pipe a child reads and refills by a byte every
    1 ms (a wake, never PIPE_BUF bytes of room): each wake runs the call again,
    which keeps its first deadline, so the poll ends after 5 ms of virtual time,
    while the child still runs, not after its last wake."""
    status, out, _m = _emulated(bindir, "static", "pollwake")
    assert status == 0
    assert out == b"poll: 0\nchild woke the poller a few times\nchild exited 0\n"


def test_children_are_processes_with_their_own_pids(bindir: Path) -> None:
    """m.processes: the first process is pid 1 with no parent; each child has a
    new pid, its parent's pid as ppid, and its exit status; tasks carry their pid."""
    status, out, m = _emulated(bindir, "static", "tree", "5")
    assert status == 0
    assert sorted(out.decode().splitlines()[:5]) == [f"child {i}" for i in range(5)]
    assert out.decode().splitlines()[5] == "all reaped, sum 10, then ECHILD"
    procs = m.processes
    assert [(p.pid, p.ppid) for p in procs] == [(1, 0)] + [(pid, 1) for pid in range(2, 7)]
    assert sorted(p.exited.status for p in procs[1:]) == [0, 1, 2, 3, 4]
    assert all(t.pid == p.pid for p in procs for t in p.threads)


def test_the_interleaving_is_the_seeds(bindir: Path) -> None:
    """Every process runs on the one seeded scheduler: a seed gives one order."""
    runs = {seed: _emulated(bindir, "static", "tree", "6", seed=seed)[1] for seed in (1, 2, 1)}
    assert runs[1] == _emulated(bindir, "static", "tree", "6", seed=1)[1]
    orders = {_emulated(bindir, "static", "tree", "6", seed=s)[1] for s in range(6)}
    assert len(orders) > 1                        # the seed decides, not a fixed order


def test_a_child_killed_by_a_fault_is_a_signal_to_its_parent(bindir: Path) -> None:
    """A child's unhandled SIGSEGV ends the child (status 139 seen as signal 11),
    not the run; the log says why."""
    status, out, m = _emulated(bindir, "static", "segv")
    assert (status, out) == (0, b"child killed by 11\n")
    assert m.processes[1].exited.signal == 11
    assert any("killed by signal 11" in line for line in m.kernel.diagnostics.messages())


def test_exec_of_a_script_runs_its_interpreter(bindir: Path, tmp_path: Path) -> None:
    """#! INTERP ARG: the interpreter gets ARG, then the script's path (binfmt_script)."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "procs.static").write_bytes((bindir / "procs.static").read_bytes())
    (root / "procs.static").chmod(0o755)
    script = root / "script"
    script.write_text("#!./procs.static hello\n")
    script.chmod(0o755)
    m = Machine.from_elf(str(root / "procs.static"), ["./procs.static", "run", "./script", "x"],
                         fs_root=str(root))
    m.stdout = io.BytesIO()
    assert m.run(timeout=60) == 0
    native = subprocess.run(["./procs.static", "run", "./script", "x"], cwd=root, capture_output=True)
    assert m.stdout.getvalue() == native.stdout == b"hello ./script ppid-known=1\nchild exited 0\n"


@pytest.mark.parametrize(("target", "why"), [("./missing", "No such file or directory"),
                                             ("/etc/passwd", "Permission denied"),
                                             (".", "Permission denied")])
def test_a_failed_exec_is_an_errno_and_the_process_goes_on(bindir: Path, target: str, why: str) -> None:
    """execve fails before the point of no return: the caller sees the errno
    (ENOENT, EACCES for a denied path or a directory) and keeps running."""
    status, out, _m = _emulated(bindir, "static", "run", target)
    assert status == 0
    assert out.decode() == f"execv {target}: {why}\nchild exited 127\n"


def test_fork_copies_only_touched_pages() -> None:
    """A 100 MiB mapping the parent touched in two pages costs the child two pages."""
    parent = Machine()
    child = Machine()
    region = parent.mem.map(0x10_0000_0000, 100 << 20, PROT_RW, "big")
    parent.mem.write(region.start + 5 * PAGE, b"a")
    parent.mem.write(region.start + (90 << 20), b"b")
    mem: Memory = child.mem
    copied = mem.copy_from(parent.mem, skip=lambda r: r.name != "big")
    assert copied == 2 * PAGE
    assert mem.read(region.start + 5 * PAGE, 1) == b"a"
    assert mem.read(region.start + (90 << 20), 1) == b"b"
    assert mem.read(region.start, 16) == bytes(16)


def test_fork_copy_shows_original_bytes_under_patches() -> None:
    """A byte patched in the parent (a breakpoint) is the original in the copy."""
    parent, child = Machine(), Machine()
    r = parent.mem.map(0x500000, PAGE, PROT_RW, "code")
    parent.mem.write(r.start, b"\x55")
    parent.mem.patch_byte(r.start, 0xCC)
    child.mem.copy_from(parent.mem, skip=lambda reg: reg.name != "code")
    assert child.mem.read(r.start, 1) == b"\x55"


def test_pipe_is_a_fifo_and_blocks_through_the_scheduler(bindir: Path) -> None:
    """28 KB through a 64 KiB pipe from a child that writes line by line: every
    byte arrives, the last read is EOF, and the reader waited rather than spun."""
    status, out, m = _emulated(bindir, "static", "pipe")
    assert (status, out) == (0, b"read 28890 bytes, 3000 lines, last read 0\nchild exited 0\n")
    assert m.processes[1].exited.status == 0


def test_processes_of_a_dynamic_program_share_nothing_they_should_not(bindir: Path) -> None:
    """After fork the child's memory is its own: the child's machine is another."""
    _status, _out, m = _emulated(bindir, "dyn", "fork")
    parent, child = m.processes
    assert parent.m is not child.m


def test_fd_flags_survive_fork_and_cloexec_closes_at_exec(bindir: Path) -> None:
    """O_CLOEXEC is per descriptor: inherited by fork, closed by execve."""
    status, out, _m = _emulated(bindir, "dyn", "cloexec")
    assert (status, out) == (0, b"fd 4 open after exec: 0\nchild exited 0\n")


def test_stat_of_a_pipe_is_a_fifo() -> None:
    """fstat on a pipe end says S_IFIFO (wc, cat and sort look)."""
    from emu.linux._pipe import Pipe, PipeReader
    end = PipeReader(Pipe())
    assert end.host_stat() is None          # no host file: stat_of reports a FIFO
    assert stat.S_ISFIFO(os.stat("/dev/null").st_mode) is False


def test_ended_processes_give_their_engines_back(bindir: Path) -> None:
    """Thirty children come and go: their machines are released (engine, memory,
    symbols), only the first machine's engine is left."""
    import gc

    from unicorn import Uc

    status, _out, m = _emulated(bindir, "dyn", "tree", "30")
    assert status == 0
    gc.collect()
    assert [o for o in gc.get_objects() if isinstance(o, Uc)] == [m.uc]
    assert all(getattr(p.m, "_released", False) for p in m.processes[1:])
    assert len(m.processes) == 31


def test_a_fork_bomb_meets_the_process_limit(bindir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_PROCESSES live processes fork fails with EAGAIN (RLIMIT_NPROC's
    errno), and the guest can clean up: the host never runs out first."""
    import emu.linux._process as process

    monkeypatch.setattr(process, "MAX_PROCESSES", 6)
    status, out, m = _emulated(bindir, "static", "bomb")
    assert (status, out) == (0, b"fork failed after 5: Resource temporarily unavailable\nreaped 5\n")
    assert len(m.processes) == 6


def test_the_processes_of_a_run_share_its_memory_limit(bindir: Path) -> None:
    """The program maps about 8 MiB (its stack, mostly): under a 12 MiB mem_limit
    for the run a copy of it does not fit, and fork fails with ENOMEM."""
    m = Machine.from_elf(str(bindir / "procs.static"), ["./procs.static", "bomb"], fs_root=str(bindir),
                         mem_limit=12 << 20)
    m.stdout = io.BytesIO()
    assert m.run(timeout=60) == 0
    assert m.stdout.getvalue() == b"fork failed after 0: Cannot allocate memory\nreaped 0\n"
