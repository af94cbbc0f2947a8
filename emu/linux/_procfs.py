"""``/proc`` of the view: the run's processes' entries, made from the
emulator's state when a file is opened (``fs/proc``'s ``seq_file`` texts),
never the host's.

``/proc/self`` and ``/proc/<pid>``: ``maps`` (``fs/proc/task_mmu.c``:
``show_map_vma``, from the guest's mappings), ``exe``, ``cwd`` and ``root``
(symlinks), ``fd/`` (a symlink per descriptor, ``proc_fd_link``; following
one reaches the open file itself, as ``nd_jump_link`` does), ``status``
(``fs/proc/array.c``), ``stat``, ``comm``, ``mounts``. System-wide:
``cpuinfo`` (one emulated CPU, as ``sched_getaffinity`` says), ``meminfo``
(``mem_limit`` as the machine's memory), ``filesystems``, ``mounts``,
``uptime``, ``version``, ``loadavg``. Every process of the run has its
``/proc/<pid>`` (the same uid: all are readable); a pid not in the run is
``ENOENT``.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._memory import PROT_R, PROT_W, PROT_X
from ._files import MAX_FDS, OpenFile
from ._registry import KernelError
from ._structs import UTSNAME
from ._vnode import (
    DT_DIR,
    DT_LNK,
    DT_REG,
    BytesFile,
    Dirent,
    Node,
    StatFs,
    SymlinkNode,
    join,
    make_stat,
    path_ino,
)

if TYPE_CHECKING:
    from ._kernel import Kernel

__all__ = ["ProcMount", "PROC_SUPER_MAGIC"]

PROC_SUPER_MAGIC = 0x9FA0
_PROC_DEV = 0x16
_START = time.monotonic()
_FILESYSTEMS = b"nodev\tsysfs\nnodev\ttmpfs\nnodev\tproc\nnodev\tdevtmpfs\nnodev\tpipefs\n\text4\n"
_CPU_FLAGS = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush "
              "mmx fxsr sse sse2 syscall nx lm constant_tsc rep_good nopl pni cx16 popcnt "
              "hypervisor lahf_lm")

# What the mount table says of each mount: (guest path, source, fstype, options).
MountList = Callable[[], list[tuple[str, str, str, str]]]


class ProcMount:
    def __init__(self, mounts: MountList) -> None:
        self.mounts = mounts

    def root(self, k: Kernel | None, guest: str) -> Node:
        return ProcDir(guest, k, self, _ROOT)

    def describe(self) -> tuple[str, str, str]:
        return "proc", "proc", "rw,nosuid,nodev,noexec,relatime"


# --- the texts ------------------------------------------------------------------------
def _maps(k: Kernel) -> bytes:
    lines = []
    for r in k.m.mem.regions:
        perms = "".join(c if r.perms & bit else "-" for c, bit in (("r", PROT_R), ("w", PROT_W),
                                                                    ("x", PROT_X))) + "p"
        line = f"{r.start:08x}-{r.end:08x} {perms} 00000000 00:00 0"
        name = "" if r.name == "[anon]" else r.name
        lines.append(f"{line:<72} {name}" if name else line)
    return "".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape")


def _comm(k: Kernel) -> str:
    task = k.m.current_task if k.m.current_task in k.threads else k.threads[0]
    return task.comm or os.path.basename(k.exe_path)[:15]


def _status(k: Kernel) -> bytes:
    kb = k.m.mem.mapped >> 10
    threads = len([t for t in k.threads if not t.done])
    ids = lambda n: "\t".join([str(n)] * 4)  # noqa: E731
    rows = [("Name", _comm(k)), ("Umask", f"{k.umask:04o}"), ("State", "R (running)"),
            ("Tgid", k.pid), ("Ngid", 0), ("Pid", k.pid), ("PPid", k.ppid), ("TracerPid", 0),
            ("Uid", ids(k.uid)), ("Gid", ids(k.gid)), ("FDSize", MAX_FDS), ("Groups", k.gid),
            ("VmPeak", f"{kb:8d} kB"), ("VmSize", f"{kb:8d} kB"), ("VmHWM", f"{kb:8d} kB"),
            ("VmRSS", f"{kb:8d} kB"), ("Threads", threads), ("SigQ", f"0/{63_000}"),
            ("Cpus_allowed", "1"), ("Cpus_allowed_list", "0"),
            ("voluntary_ctxt_switches", 0), ("nonvoluntary_ctxt_switches", 0)]
    return "".join(f"{name}:\t{value}\n" for name, value in rows).encode()


def _stat(k: Kernel) -> bytes:
    """``do_task_stat``: 52 fields; what the emulator does not track is 0."""
    fields = [k.pid, f"({_comm(k)})", "R", k.ppid, k.pid, k.pid, 0, -1, 0x400000] + [0] * 10
    fields += [len(k.threads), 0, 0, k.m.mem.mapped, k.m.mem.mapped >> 12] + [0] * 33
    return (" ".join(map(str, fields[:52])) + "\n").encode()


def _cpuinfo(k: Kernel) -> bytes:
    rows = [("processor", 0), ("vendor_id", "GenuineIntel"), ("cpu family", 6), ("model", 6),
            ("model name", "kprobe-emu virtual CPU"), ("stepping", 3), ("cpu MHz", "1000.000"),
            ("cache size", "512 KB"), ("physical id", 0), ("siblings", 1), ("core id", 0),
            ("cpu cores", 1), ("apicid", 0), ("fpu", "yes"), ("fpu_exception", "yes"),
            ("cpuid level", 13), ("wp", "yes"), ("flags", _CPU_FLAGS), ("bogomips", "2000.00"),
            ("clflush size", 64), ("cache_alignment", 64),
            ("address sizes", "48 bits physical, 48 bits virtual")]
    return ("".join(f"{name:<16}: {value}\n" for name, value in rows) + "\n").encode()


def _meminfo(k: Kernel) -> bytes:
    mem = k.m.mem
    total, free = mem.limit >> 10, max(mem.limit - mem.mapped, 0) >> 10
    shmem = getattr(k.fs, "memfs_used", lambda: 0)() >> 10
    rows = [("MemTotal", total), ("MemFree", free), ("MemAvailable", free), ("Buffers", 0),
            ("Cached", shmem), ("SwapCached", 0), ("Active", 0), ("Inactive", 0),
            ("SwapTotal", 0), ("SwapFree", 0), ("Dirty", 0), ("Shmem", shmem),
            ("CommitLimit", total), ("Committed_AS", mem.mapped >> 10)]
    return "".join(f"{name + ':':<16}{value:>8} kB\n" for name, value in rows).encode()


def _mounts_text(mounts: MountList) -> bytes:
    def esc(s: str) -> str:
        return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in s)
    return "".join(f"{esc(src)} {esc(guest)} {fstype} {opts} 0 0\n"
                   for guest, src, fstype, opts in mounts()).encode("utf-8", "surrogateescape")


def _uptime(k: Kernel) -> bytes:
    up = time.monotonic() - _START
    return f"{up:.2f} {up:.2f}\n".encode()


def _version(k: Kernel) -> bytes:
    return f"Linux version {UTSNAME[2]} (kprobe-emu) {UTSNAME[3]}\n".encode()


def _loadavg(k: Kernel) -> bytes:
    return f"0.00 0.00 0.00 1/{len(k.threads)} {k.pid}\n".encode()


# --- the tree -------------------------------------------------------------------------
_File = Callable[["Kernel"], bytes]
_ROOT: dict[str, _File | str] = {
    "cpuinfo": _cpuinfo, "meminfo": _meminfo, "uptime": _uptime, "version": _version,
    "loadavg": _loadavg, "filesystems": lambda k: _FILESYSTEMS, "mounts": "self/mounts",
}
_PID: dict[str, _File | str] = {
    "maps": _maps, "status": _status, "stat": _stat, "comm": lambda k: f"{_comm(k)}\n".encode(),
}


def _processes(k: Kernel) -> list[Kernel]:
    """The run's processes not yet reaped (``k.world``), else ``k`` alone."""
    world = getattr(k, "world", None)
    every = getattr(world, "all", None)
    return [p for p in every if not p.reaped] if isinstance(every, list) else [k]


def _process(k: Kernel, name: str) -> Kernel | None:
    if str(int(name)) != name:
        return None
    return next((p for p in _processes(k) if p.pid == int(name)), None)


class ProcDir(Node):
    """``/proc`` itself (``table`` ``_ROOT``: ``k`` the caller) or
    ``/proc/<pid>`` (``_PID``: ``k`` that process)."""

    def __init__(self, guest: str, k: Kernel | None, mount: ProcMount,
                 table: dict[str, _File | str], pid: bool = False) -> None:
        super().__init__(guest)
        self.k = k
        self.mount = mount
        self.fs = mount
        self.table = table
        self.pid = pid

    def mode(self) -> int:
        return stat.S_IFDIR | 0o555

    def stat(self) -> os.stat_result:
        uid = self.k.uid if self.pid and self.k is not None else 0
        return make_stat(self.mode(), path_ino(self.guest), _PROC_DEV, nlink=2, uid=uid, gid=uid)

    def _names(self) -> dict[str, int]:
        names = {n: DT_LNK if isinstance(v, str) else DT_REG for n, v in self.table.items()}
        if self.k is None:
            return {n: t for n, t in names.items() if t == DT_REG}
        if self.pid:
            names.update({"exe": DT_LNK, "cwd": DT_LNK, "root": DT_LNK, "fd": DT_DIR, "mounts": DT_REG})
        else:
            names["self"] = DT_LNK
            names.update((str(p.pid), DT_DIR) for p in _processes(self.k))
        return names

    def entries(self) -> list[Dirent]:
        return [Dirent(n, path_ino(join(self.guest, n)), t) for n, t in self._names().items()]

    def lookup(self, name: str) -> Node:
        guest = join(self.guest, name)
        k = self.k
        if not self.pid and k is not None and name.isdigit():
            proc = _process(k, name)
            if proc is not None:
                return ProcDir(guest, proc, self.mount, _PID, pid=True)
        if name not in self._names():
            raise KernelError(errno.ENOENT)
        assert k is not None or name in self.table
        if self.pid and k is not None:
            if name == "fd":
                return FdDir(guest, k, self.mount)
            if name == "mounts":
                return ProcFile(guest, lambda: _mounts_text(self.mount.mounts), k)
            links = {"exe": k.exe_path, "cwd": k.cwd, "root": "/"}
            if name in links:
                return SymlinkNode(guest, links[name], _PROC_DEV)
        elif k is not None and name == "self":
            return SymlinkNode(guest, str(k.pid), _PROC_DEV)
        entry = self.table[name]
        if isinstance(entry, str):
            return SymlinkNode(guest, entry, _PROC_DEV)
        return ProcFile(guest, lambda: entry(k), k)  # type: ignore[arg-type]

    def statfs(self) -> StatFs:
        return StatFs(PROC_SUPER_MAGIC, 4096, 0, 0, 0, 0, 0)


class ProcFile(Node):
    """A text made when it is opened; size 0 in ``stat``, as in ``/proc``."""

    def __init__(self, guest: str, text: Callable[[], bytes], k: Kernel | None) -> None:
        super().__init__(guest)
        self.text = text
        self.k = k

    def mode(self) -> int:
        return stat.S_IFREG | 0o444

    def stat(self) -> os.stat_result:
        uid = self.k.uid if self.k is not None else 0
        return make_stat(self.mode(), path_ino(self.guest), _PROC_DEV, uid=uid, gid=uid)

    def open(self, k: Kernel, flags: int) -> OpenFile:
        return BytesFile(self, self.text())

    def statfs(self) -> StatFs:
        return StatFs(PROC_SUPER_MAGIC, 4096, 0, 0, 0, 0, 0)


class FdDir(Node):
    """``/proc/<pid>/fd``: a symlink per open descriptor."""

    def __init__(self, guest: str, k: Kernel, mount: ProcMount) -> None:
        super().__init__(guest)
        self.k = k
        self.fs = mount

    def mode(self) -> int:
        return stat.S_IFDIR | 0o500

    def stat(self) -> os.stat_result:
        return make_stat(self.mode(), path_ino(self.guest), _PROC_DEV, nlink=2, uid=self.k.uid,
                         gid=self.k.gid)

    def entries(self) -> list[Dirent]:
        return [Dirent(str(fd), path_ino(join(self.guest, str(fd))), DT_LNK)
                for fd, _f in self.k.files.items()]

    def lookup(self, name: str) -> Node:
        if not name.isdigit() or str(int(name)) != name or int(name) not in self.k.files:
            raise KernelError(errno.ENOENT)
        return FdLink(join(self.guest, name), self.k.files[int(name)])

    def statfs(self) -> StatFs:
        return StatFs(PROC_SUPER_MAGIC, 4096, 0, 0, 0, 0, 0)


class FdLink(Node):
    """``/proc/<pid>/fd/N``: reads as the open file's path, leads to the file itself."""

    def __init__(self, guest: str, f: OpenFile) -> None:
        super().__init__(guest)
        self.file = f

    def mode(self) -> int:
        return stat.S_IFLNK | 0o700

    def stat(self) -> os.stat_result:
        return make_stat(self.mode(), path_ino(self.guest), _PROC_DEV, size=64)

    def readlink(self) -> str:
        return self.file.path

    def follow(self) -> Node:
        node = getattr(self.file, "node", None)
        return node if isinstance(node, Node) else OpenFileNode(self.file)


class OpenFileNode(Node):
    """An open file that has no name in the view (a pipe, the standard streams):
    opening it again through ``/proc/self/fd/N`` gives the same open file."""

    def __init__(self, f: OpenFile) -> None:
        super().__init__(f.path)
        self.file = f

    def stat(self) -> os.stat_result:
        st = self.file.host_stat()
        return st if st is not None else make_stat(stat.S_IFIFO | 0o600, 1, 0xC, uid=1000, gid=1000)

    def open(self, k: Kernel, flags: int) -> OpenFile:
        return self.file

    def access(self, k: Kernel | None, want: int) -> bool:
        return True
