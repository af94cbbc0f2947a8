"""The file view's building blocks: a resolved name (:class:`Node`), directory
streams, path-only descriptors and the synthetic nodes of the mount table.

A :class:`Node` is what ``namei`` ends on (a dentry with its inode, in the
kernel's terms): a guest path that is canonical (no ``.``, ``..`` or symlink in
it) and the file system object behind it. The operations are the kernel's
``inode_operations`` and ``file_operations`` reduced to what the syscall layer
needs; each returns or raises :class:`KernelError` with Linux's errno. The
defaults here are what a read-only synthetic tree (``/proc``, ``/dev``) answers
an unprivileged process: ``EACCES`` to create or remove, ``EPERM`` to change
attributes (``chmod``/``utimensat`` of a file one does not own).

A refusal of the view itself (a path outside it, a write to a read-only part)
is :class:`Denied`: ``EACCES`` to the guest, and reported (``Kernel.deny``).
"""

from __future__ import annotations

import errno
import os
import stat
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from ._files import HostFile, OpenFile
from ._registry import KernelError

if TYPE_CHECKING:
    from ._kernel import Kernel

__all__ = ["Node", "Denied", "Dirent", "ViewFile", "DirStream", "PathFile", "BytesFile",
           "SymlinkNode", "Passage", "StatFs", "make_stat", "permits", "check_open_mode", "mmap_source",
           "path_ino", "join", "dtype_of", "DT_DIR", "DT_REG", "DT_LNK", "DT_CHR", "ACC_R", "ACC_W",
           "ACC_X"]

# include/linux/fs_types.h: FT_* as d_type
DT_UNKNOWN, DT_FIFO, DT_CHR, DT_DIR, DT_BLK, DT_REG, DT_LNK, DT_SOCK = 0, 1, 2, 4, 6, 8, 10, 12
ACC_X, ACC_W, ACC_R = 1, 2, 4            # MAY_EXEC, MAY_WRITE, MAY_READ
O_ACCMODE, O_RDONLY, O_WRONLY, O_RDWR = 3, 0, 1, 2


class StatFs(NamedTuple):
    """``struct statfs`` (``include/uapi/asm-generic/statfs.h``), x86-64 layout."""

    f_type: int
    f_bsize: int
    f_blocks: int
    f_bfree: int
    f_bavail: int
    f_files: int
    f_ffree: int
    f_namelen: int = 255
    f_frsize: int = 4096
    f_flags: int = 0


class Denied(KernelError):
    """The view refuses ``guest`` (``EACCES``, reported once per path). ``host`` is
    where the host would have it: a path the host lacks is ``ENOENT`` instead."""

    def __init__(self, guest: str, host: str | None = None) -> None:
        super().__init__(errno.EACCES)
        self.guest = guest
        self.host = guest if host is None else host


class Dirent(NamedTuple):
    name: str
    ino: int
    dtype: int


def join(base: str, name: str) -> str:
    return base + name if base.endswith("/") else f"{base}/{name}"


def path_ino(path: str) -> int:
    """A stable inode number for a synthetic file (never 0: glibc skips those)."""
    return (zlib.crc32(path.encode("utf-8", "surrogateescape")) & 0x7FFF_FFFF) | 0x1000


def dtype_of(mode: int) -> int:
    return {stat.S_IFDIR: DT_DIR, stat.S_IFREG: DT_REG, stat.S_IFLNK: DT_LNK, stat.S_IFCHR: DT_CHR,
            stat.S_IFIFO: DT_FIFO, stat.S_IFSOCK: DT_SOCK, stat.S_IFBLK: DT_BLK}.get(
        stat.S_IFMT(mode), DT_UNKNOWN)


_BOOT_NS = time.time_ns()


def make_stat(mode: int, ino: int, dev: int, *, size: int = 0, nlink: int = 1, uid: int = 0,
              gid: int = 0, rdev: int = 0, times: tuple[int, int, int] | None = None) -> os.stat_result:
    """An ``os.stat_result`` for a file that is not the host's (``pack_stat`` takes it).
    ``times``: atime, mtime, ctime in nanoseconds (default: when the emulator started)."""
    at, mt, ct = times if times is not None else (_BOOT_NS,) * 3
    return os.stat_result(
        (mode, ino, dev, nlink, uid, gid, size, at // 10**9, mt // 10**9, ct // 10**9),
        {"st_atime_ns": at, "st_mtime_ns": mt, "st_ctime_ns": ct, "st_blksize": 4096,
         "st_blocks": (size + 511) // 512, "st_rdev": rdev})


def permits(st: os.stat_result, k: Kernel | None, want: int) -> bool:
    """``generic_permission`` for a file that is not the host's: owner, group or
    other bits (the guest is never root)."""
    uid, gid = (k.uid, k.gid) if k is not None else (1000, 1000)
    shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
    return (st.st_mode >> shift) & want == want


class Node:
    """A resolved name of the view. Subclasses override what their kind supports."""

    fs: object = None           # the mount it is on: rename and link across mounts are EXDEV
    writable = False            # the view lets the guest change it and what is under it

    def __init__(self, guest: str) -> None:
        self.guest = guest

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.guest!r})"

    # --- what it is ----------------------------------------------------------------------
    def stat(self) -> os.stat_result:
        raise NotImplementedError

    def mode(self) -> int:
        return self.stat().st_mode

    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode())

    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode())

    def readlink(self) -> str:
        raise KernelError(errno.EINVAL)

    def follow(self) -> Node | str:
        """Where a symlink leads: its text, or a node directly (``/proc`` magic links)."""
        return self.readlink()

    def access(self, k: Kernel | None, want: int) -> bool:
        return permits(self.stat(), k, want)

    # --- a directory ------------------------------------------------------------------
    def lookup(self, name: str) -> Node:
        raise KernelError(errno.ENOTDIR if not self.is_dir() else errno.ENOENT)

    def entries(self) -> list[Dirent]:
        raise KernelError(errno.ENOTDIR)

    def create(self, k: Kernel, name: str, flags: int, mode: int) -> OpenFile:
        raise KernelError(errno.EACCES)

    def mkdir(self, k: Kernel, name: str, mode: int) -> None:
        raise KernelError(errno.EACCES)

    def symlink(self, k: Kernel, name: str, target: str) -> None:
        raise KernelError(errno.EACCES)

    def link(self, k: Kernel, old: Node, name: str) -> None:
        raise KernelError(errno.EACCES)

    def unlink(self, name: str, *, rmdir: bool = False) -> None:
        raise KernelError(errno.EACCES)

    def rename(self, name: str, newdir: Node, newname: str, flags: int) -> None:
        raise KernelError(errno.EACCES)

    # --- the file itself ----------------------------------------------------------------
    def open(self, k: Kernel, flags: int) -> OpenFile:
        raise KernelError(errno.EACCES)

    def chmod(self, mode: int) -> None:
        raise KernelError(errno.EPERM)

    def utimens(self, atime: int | None, mtime: int | None) -> None:
        """Set the times (nanoseconds; ``None``: leave it, ``UTIME_OMIT``)."""
        raise KernelError(errno.EPERM)

    def truncate(self, size: int) -> None:
        raise KernelError(errno.EACCES if not self.is_dir() else errno.EISDIR)

    def statfs(self) -> StatFs:
        raise KernelError(errno.ENOSYS)


class SymlinkNode(Node):
    """A symlink of the mount table (``/bin`` -> ``usr/bin`` on a merged-/usr host)
    or of a synthetic tree (``/proc/self``, ``/dev/stdin``)."""

    def __init__(self, guest: str, target: str | Callable[[], Node | str], dev: int = 0) -> None:
        super().__init__(guest)
        self._target = target
        self._dev = dev

    def stat(self) -> os.stat_result:
        text = self.readlink()
        return make_stat(stat.S_IFLNK | 0o777, path_ino(self.guest), self._dev, size=len(text.encode()))

    def mode(self) -> int:
        return stat.S_IFLNK | 0o777

    def follow(self) -> Node | str:
        return self._target if isinstance(self._target, str) else self._target()

    def readlink(self) -> str:
        target = self.follow()
        return target if isinstance(target, str) else target.guest

    def statfs(self) -> StatFs:
        return StatFs(0x01021994, 4096, 0, 0, 0, 0, 0)


class Passage(Node):
    """A directory on the way to a mount point: it holds only what leads there;
    any other name in it is outside the view (``Denied``: the walk makes it
    ``ENOENT`` when the host lacks it)."""

    def mode(self) -> int:
        return stat.S_IFDIR | 0o555

    def stat(self) -> os.stat_result:
        try:
            st = os.stat(self.guest)            # the host's directory of that name, if any
            if stat.S_ISDIR(st.st_mode):
                return st
        except OSError:
            pass
        return make_stat(self.mode(), path_ino(self.guest), 0x2B, nlink=2)

    def lookup(self, name: str) -> Node:
        raise Denied(join(self.guest, name))

    def entries(self) -> list[Dirent]:
        return []                               # the mount table's entries come as extras

    def access(self, k: Kernel | None, want: int) -> bool:
        return not want & ~(ACC_R | ACC_X)

    def _deny(self, name: str = "") -> None:
        raise Denied(join(self.guest, name) if name else self.guest)

    def create(self, k: Kernel, name: str, flags: int, mode: int) -> OpenFile:
        raise Denied(join(self.guest, name))

    def mkdir(self, k: Kernel, name: str, mode: int) -> None:
        self._deny(name)

    def symlink(self, k: Kernel, name: str, target: str) -> None:
        self._deny(name)

    def link(self, k: Kernel, old: Node, name: str) -> None:
        self._deny(name)

    def unlink(self, name: str, *, rmdir: bool = False) -> None:
        self._deny(name)

    def rename(self, name: str, newdir: Node, newname: str, flags: int) -> None:
        self._deny(name)

    def chmod(self, mode: int) -> None:
        self._deny()

    def utimens(self, atime: int | None, mtime: int | None) -> None:
        self._deny()


# --- open files that belong to the view -------------------------------------------------
class ViewFile(OpenFile):
    """An open file of the view's own (not a host descriptor): knows its node."""

    node: Node

    def host_stat(self) -> os.stat_result:
        return self.node.stat()


class DirStream(ViewFile):
    """An open directory: ``getdents64`` reads :meth:`listing` from ``pos``, as
    ``dir_emit`` does; ``lseek`` moves ``pos`` (``rewinddir``, ``seekdir``), and
    a rewind reads the directory afresh. ``.`` and ``..`` come first."""

    def __init__(self, node: Node, extra: list[Dirent], parent_ino: Callable[[], int]) -> None:
        self.node = node
        self.path = node.guest
        self.pos = 0
        self._extra = extra
        self._parent_ino = parent_ino
        self._listing: list[Dirent] | None = None

    def listing(self) -> list[Dirent]:
        if self._listing is None:
            own = self.node.entries()
            names = {e.name for e in own}
            self._listing = [Dirent(".", self.node.stat().st_ino, DT_DIR),
                             Dirent("..", self._parent_ino(), DT_DIR), *own,
                             *(e for e in self._extra if e.name not in names)]
        return self._listing

    def read(self, n: int) -> bytes:
        raise KernelError(errno.EISDIR)

    def pread(self, n: int, offset: int) -> bytes:
        raise KernelError(errno.EISDIR)

    def lseek(self, offset: int, whence: int) -> int:
        pos = {0: 0, 1: self.pos}.get(whence)
        if pos is None or pos + offset < 0:
            raise KernelError(errno.EINVAL)
        self.pos = pos + offset
        if self.pos == 0:
            self._listing = None
        return self.pos


class PathFile(ViewFile):
    """``O_PATH``: a descriptor that names a file and does nothing else (a
    ``dirfd``, ``fstat``, ``fchdir``); reading or writing is ``EBADF``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.path = node.guest


class BytesFile(ViewFile):
    """A read-only file whose bytes were made when it was opened (``seq_file``
    text of ``/proc``)."""

    def __init__(self, node: Node, data: bytes) -> None:
        self.node = node
        self.path = node.guest
        self._data = data
        self._pos = 0

    @property
    def regular(self) -> bool:
        return True

    def read(self, n: int) -> bytes:
        chunk = self._data[self._pos:self._pos + n]
        self._pos += len(chunk)
        return chunk

    def pread(self, n: int, offset: int) -> bytes:
        return self._data[offset:offset + n]

    def lseek(self, offset: int, whence: int) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._data)}.get(whence)
        if base is None or base + offset < 0:
            raise KernelError(errno.EINVAL)
        self._pos = base + offset
        return self._pos


def check_open_mode(node: Node, k: Kernel, flags: int) -> None:
    """``may_open``: a directory opens read-only, and the permission bits allow
    what the access mode asks (files that are not the host's)."""
    acc = flags & O_ACCMODE
    if node.is_dir() and acc != O_RDONLY:
        raise KernelError(errno.EISDIR)
    want = {O_RDONLY: ACC_R, O_WRONLY: ACC_W, O_RDWR: ACC_R | ACC_W}.get(acc, ACC_R | ACC_W)
    if not node.access(k, want):
        raise KernelError(errno.EACCES)


def mmap_source(f: OpenFile) -> OpenFile | None:
    """``file->f_op->mmap``: the open file a mapping copies from, ``None`` for
    anonymous memory (``/dev/zero``), ``ENODEV`` for a file that cannot be
    mapped (a pipe, a directory, ``/proc``, the other devices)."""
    if getattr(f, "mmap_zero", False):
        return None
    if isinstance(f, HostFile) and f.regular or getattr(f, "mmappable", False):
        return f
    raise KernelError(errno.ENODEV)
