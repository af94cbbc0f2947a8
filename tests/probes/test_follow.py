"""Probes follow processes as uprobes do (issue 11): a forked child keeps its
parent's probes (``uprobe_dup_mmap``), a program started by ``execve`` gets the
probes on what it maps, and handlers see which process hit."""

from __future__ import annotations

import collections
import gc
import io
from pathlib import Path

import pytest

from emu import Machine
from probes import Kprobe, Kretprobe, list_probes, probe_copies, register_kprobe, register_kretprobe
from tests.guests import guest_bin


@pytest.fixture(scope="module")
def bindir() -> Path:
    return guest_bin()


def _machine(bindir: Path, flavour: str, *args: str) -> Machine:
    m = Machine.from_elf(str(bindir / f"procs.{flavour}"), [f"./procs.{flavour}", *args],
                         fs_root=str(bindir))
    m.stdout = io.BytesIO()
    return m


def _counting(hits: collections.Counter[tuple[int, str]]):  # type: ignore[no-untyped-def]
    def pre(kp: Kprobe, regs) -> int:  # type: ignore[no-untyped-def]
        task = regs.machine.current_task
        hits[(task.pid, task.comm)] += 1
        return 0
    return pre


def test_a_forked_child_keeps_its_parents_probes(bindir: Path) -> None:
    """printf is called once in the child and twice in the parent: three hits,
    each seen with the pid of the process that made it. The child's probe is a
    copy (probe_copies) listed on the child's machine while it lives, gone with it."""
    m = _machine(bindir, "static", "fork")
    hits: collections.Counter[tuple[int, str]] = collections.Counter()
    count = _counting(hits)
    seen_in_child: list[tuple[int, bool]] = []

    def pre(kp: Kprobe, regs) -> int:  # type: ignore[no-untyped-def]
        if regs.machine is not m:
            seen_in_child.append((len(probe_copies(original)), "printf" in list_probes(regs.machine)))
        return count(kp, regs)  # type: ignore[no-any-return]

    original = Kprobe(symbol_name="printf", pre_handler=pre)
    register_kprobe(m, original)
    assert m.run() == 0
    assert hits == {(1, "procs.static"): 2, (2, "procs.static"): 1}
    assert seen_in_child == [(1, True)]
    gc.collect()
    assert probe_copies(original) == []        # the child's machine was released


@pytest.mark.parametrize("flavour", ["static", "dyn"])
def test_probes_follow_exec_of_the_same_program_and_its_libraries(bindir: Path, flavour: str) -> None:
    """The exec'd program maps the same file (its own symbols follow) and libc
    (OBJECT:SYMBOL follows, pending until the new program maps it)."""
    m = _machine(bindir, flavour, "exec")
    hits: collections.Counter[tuple[int, str]] = collections.Counter()
    name = "printf" if flavour == "static" else "libc:printf"
    register_kprobe(m, Kprobe(symbol_name=name, pre_handler=_counting(hits)))
    returns: collections.Counter[int] = collections.Counter()
    register_kretprobe(m, Kretprobe(symbol_name="main",
                                    handler=lambda ri, regs: returns.update([regs.machine.current_task.pid])))
    assert m.run() == 0
    assert m.stdout.getvalue() == b"hello from-exec ppid-known=1\nchild exited 0\n"  # type: ignore[attr-defined]
    assert hits == {(1, f"procs.{flavour}"): 1, (2, f"procs.{flavour}"): 1}
    assert returns == {1: 1, 2: 1}          # the child's main returns in the new image


def test_a_fork_inside_a_probed_call_returns_normally_in_the_child(bindir: Path) -> None:
    """main is under a kretprobe when it forks: the child's copy of the stack gets
    the real return address back (no trampoline of the parent's in the child)."""
    m = _machine(bindir, "static", "tree", "3")
    returns: list[int] = []
    register_kretprobe(m, Kretprobe(symbol_name="main",
                                    handler=lambda ri, regs: returns.append(regs.machine.current_task.pid)))
    assert m.run() == 0
    assert returns == [1]                   # the children _exit; only the parent returns
    assert all(p.exited is not None and p.exited.signal == 0 for p in m.processes)


def test_posix_spawn_child_under_probes(bindir: Path) -> None:
    """CLONE_VM|CLONE_VFORK: the child runs in the parent's address space (its
    probes are the parent's) until it execs; then the new image's copies fire."""
    m = _machine(bindir, "dyn", "spawn")
    hits: collections.Counter[tuple[int, str]] = collections.Counter()
    register_kprobe(m, Kprobe(symbol_name="libc:printf", pre_handler=_counting(hits)))
    assert m.run() == 0
    assert hits == {(1, "procs.dyn"): 1, (2, "procs.dyn"): 1}


def test_a_probe_armed_only_in_an_execd_program_is_not_never_armed(bindir: Path, tmp_path: Path) -> None:
    """The first program never maps the object (a static build), the program it
    execs does (a dynamic one): the copy arms there, so the probe is not reported
    as never armed on the first machine."""
    from probes import pending_probes

    root = tmp_path / "root"
    root.mkdir()
    for name in ("procs.static", "procs.dyn"):
        (root / name).write_bytes((bindir / name).read_bytes())
        (root / name).chmod(0o755)
    m = Machine.from_elf(str(root / "procs.static"), ["./procs.static", "run", "./procs.dyn", "hello", "x"],
                         fs_root=str(root))
    m.stdout = io.BytesIO()
    hits: collections.Counter[tuple[int, str]] = collections.Counter()
    kp = Kprobe(symbol_name="libcc:puts", pre_handler=_counting(hits))
    kp2 = Kprobe(symbol_name="libc:printf", pre_handler=_counting(hits))
    register_kprobe(m, kp)
    register_kprobe(m, kp2)
    assert m.run() == 0
    assert hits == {(2, "procs.dyn"): 1}
    assert [p for p, _why in pending_probes(m)] == [kp]     # libcc: mapped by no process


def test_a_kretprobe_on_fork_fires_in_the_parent_and_the_child_returns_normally(bindir: Path) -> None:
    """fork() is under a kretprobe when it creates the child: the parent's return
    fires with the child's pid; the child's copy of the stack gets fork's real
    return address back, so it returns 0 normally, without the handler (uprobes
    would copy the instance: dup_utask)."""
    from probes import regs_return_value

    m = _machine(bindir, "dyn", "fork")
    returns: list[tuple[int, int]] = []
    register_kretprobe(m, Kretprobe(symbol_name="libc:fork", handler=lambda ri, regs: returns.append(
        (regs.machine.current_task.pid, regs_return_value(regs)))))
    assert m.run() == 0
    assert m.stdout.getvalue() == (b"in child: pid differs 1\nreaped the child 1\n"  # type: ignore[attr-defined]
                                   b"child exited 3\n")
    assert returns == [(1, 2)]


def test_handlers_see_the_running_process_through_the_first_machine(bindir: Path) -> None:
    """m.current_task of the machine the probes were registered on is the task
    that hit, in whichever process (the kernel's ``current``)."""
    m = _machine(bindir, "static", "fork")
    seen: list[tuple[int, int, bool]] = []
    register_kprobe(m, Kprobe(symbol_name="printf", pre_handler=lambda kp, regs: seen.append(
        (m.current_task.pid, m.current_task.tid, regs.machine is m)) and 0))
    assert m.run() == 0
    assert seen == [(2, 2, False), (1, 1, True), (1, 1, True)]
