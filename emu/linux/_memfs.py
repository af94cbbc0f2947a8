"""In-memory files: the run's ``/tmp`` and ``/dev/shm`` (a tmpfs, ``mm/shmem.c``)
and ``memfd_create`` files.

Every inode and every byte is charged to one :class:`MemFs` budget shared by
every process of the run (``shmem_acct_size``/``shmem_inode_acct_blocks``): a
write, a truncate or a new name past it fails with ``ENOSPC``. An unlinked file
keeps its bytes while a descriptor holds it (``iput`` at the last close). The
tree vanishes with the run.

Permissions are checked as ``generic_permission`` does for the guest's uid
(``/tmp`` is root's, mode ``1777``, so anyone may create there). Errors follow
``fs/namei.c`` (``vfs_rename``: ``EXDEV``, ``ENOTEMPTY``, ``EISDIR``,
``ENOTDIR``, ``EINVAL`` for a directory moved into itself).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from typing import TYPE_CHECKING

from ._registry import KernelError
from ._vnode import (
    ACC_W,
    ACC_X,
    O_ACCMODE,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    Dirent,
    Node,
    StatFs,
    ViewFile,
    dtype_of,
    join,
    make_stat,
    permits,
)

if TYPE_CHECKING:
    from ._kernel import Kernel

__all__ = ["MemFs", "MemMount", "MemNode", "MemFile", "memfd", "TMPFS_MAGIC", "TMP_LIMIT"]

TMPFS_MAGIC = 0x01021994
TMP_LIMIT = 256 << 20           # bytes of the run's in-memory files, by default
_INODE_COST = 256               # bytes charged per inode, besides its data and names
_MEMFS_DEV = 0x2A               # st_dev of the tmpfs (minor 42 of the anonymous major 0)
O_TRUNC, O_APPEND = 0o1000, 0o2000
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
_MAX_FILE = 1 << 40             # MAX_LFS_FILESIZE of a tmpfs is larger: EFBIG past this


class MemInode:
    __slots__ = ("ino", "mode", "uid", "gid", "nlink", "atime", "mtime", "ctime", "data",
                 "children", "target", "opens")

    def __init__(self, ino: int, mode: int, uid: int, gid: int) -> None:
        now = time.time_ns()
        self.ino, self.mode, self.uid, self.gid = ino, mode, uid, gid
        self.nlink = 2 if stat.S_ISDIR(mode) else 1
        self.atime = self.mtime = self.ctime = now
        self.data = bytearray()
        self.children: dict[str, MemInode] = {}
        self.target = ""
        self.opens = 0

    def size(self) -> int:
        if stat.S_ISLNK(self.mode):
            return len(self.target.encode("utf-8", "surrogateescape"))
        return len(self.data) if stat.S_ISREG(self.mode) else 4096 * (1 + len(self.children) // 64)

    def touch(self, *, access: bool = False) -> None:
        now = time.time_ns()
        if access:
            self.atime = now
        else:
            self.mtime = self.ctime = now


class MemFs:
    """The budget and the inode numbers of the run's in-memory files."""

    def __init__(self, limit: int = TMP_LIMIT, dev: int = _MEMFS_DEV) -> None:
        self.limit = limit
        self.used = 0
        self.dev = dev
        self._next_ino = 2

    def charge(self, n: int) -> None:
        """Take ``n`` bytes (give back when negative); ``ENOSPC`` past the limit."""
        if n > 0 and self.used + n > self.limit:
            raise KernelError(errno.ENOSPC)
        self.used += n

    def new_inode(self, mode: int, uid: int, gid: int) -> MemInode:
        self.charge(_INODE_COST)
        ino = self._next_ino
        self._next_ino += 1
        return MemInode(ino, mode, uid, gid)

    def release(self, inode: MemInode) -> None:
        """Give back a file's bytes once no name and no descriptor holds it."""
        if inode.nlink <= 0 and inode.opens <= 0:
            self.charge(-(_INODE_COST + len(inode.data) + len(inode.target)))
            inode.data = bytearray()


class MemMount:
    """A tree of a :class:`MemFs` at a guest path (``/tmp``)."""

    def __init__(self, fs: MemFs, mode: int = 0o1777) -> None:
        self.fs = fs
        self.inode = fs.new_inode(stat.S_IFDIR | mode, 0, 0)

    def root(self, k: Kernel | None, guest: str) -> Node:
        return MemNode(self, guest, self.inode)

    def describe(self) -> tuple[str, str, str]:
        return "tmpfs", "tmpfs", "rw"


class MemNode(Node):
    writable = True

    def __init__(self, mount: MemMount, guest: str, inode: MemInode) -> None:
        super().__init__(guest)
        self.mount = mount
        self.fs = mount
        self.inode = inode

    def stat(self) -> os.stat_result:
        i = self.inode
        return make_stat(i.mode, i.ino, self.mount.fs.dev, size=i.size(), nlink=max(i.nlink, 0),
                         uid=i.uid, gid=i.gid, times=(i.atime, i.mtime, i.ctime))

    def mode(self) -> int:
        return self.inode.mode

    def readlink(self) -> str:
        if not stat.S_ISLNK(self.inode.mode):
            raise KernelError(errno.EINVAL)
        return self.inode.target

    # --- a directory ------------------------------------------------------------------
    def _dir(self) -> dict[str, MemInode]:
        if not stat.S_ISDIR(self.inode.mode):
            raise KernelError(errno.ENOTDIR)
        return self.inode.children

    def lookup(self, name: str) -> Node:
        child = self._dir().get(name)
        if child is None:
            raise KernelError(errno.ENOENT)
        return MemNode(self.mount, join(self.guest, name), child)

    def entries(self) -> list[Dirent]:
        return [Dirent(n, i.ino, dtype_of(i.mode)) for n, i in self._dir().items()]

    def _may_change(self, k: Kernel | None, name: str, *, exists: bool) -> dict[str, MemInode]:
        """``may_create``/``may_delete``: write and search on the directory; the
        sticky bit keeps others' files (``check_sticky``)."""
        children = self._dir()
        if self.inode.nlink <= 0:
            raise KernelError(errno.ENOENT)             # a removed directory (IS_DEADDIR)
        if not permits(self.stat(), k, ACC_W | ACC_X):
            raise KernelError(errno.EACCES)
        if exists and name in children and self.inode.mode & stat.S_ISVTX:
            uid = k.uid if k is not None else 1000
            if uid not in (children[name].uid, self.inode.uid):
                raise KernelError(errno.EPERM)
        return children

    def _add(self, k: Kernel, name: str, mode: int) -> MemInode:
        children = self._may_change(k, name, exists=False)
        if name in children:
            raise KernelError(errno.EEXIST)
        inode = self.mount.fs.new_inode(mode, k.uid, k.gid)
        try:
            self.mount.fs.charge(len(name))
        except KernelError:
            self.mount.fs.charge(-_INODE_COST)
            raise
        children[name] = inode
        self.inode.touch()
        return inode

    def create(self, k: Kernel, name: str, flags: int, mode: int) -> MemFile:
        inode = self._add(k, name, stat.S_IFREG | (mode & 0o7777 & ~k.umask))
        return MemFile(MemNode(self.mount, join(self.guest, name), inode), flags)

    def mkdir(self, k: Kernel, name: str, mode: int) -> None:
        self._add(k, name, stat.S_IFDIR | (mode & 0o7777 & ~k.umask))
        self.inode.nlink += 1

    def symlink(self, k: Kernel, name: str, target: str) -> None:
        self.mount.fs.charge(len(target))
        try:
            inode = self._add(k, name, stat.S_IFLNK | 0o777)
        except KernelError:
            self.mount.fs.charge(-len(target))
            raise
        inode.target = target

    def link(self, k: Kernel, old: Node, name: str) -> None:
        assert isinstance(old, MemNode)
        if stat.S_ISDIR(old.inode.mode):
            raise KernelError(errno.EPERM)
        if old.inode.nlink <= 0:
            raise KernelError(errno.ENOENT)
        children = self._may_change(k, name, exists=False)
        if name in children:
            raise KernelError(errno.EEXIST)
        self.mount.fs.charge(len(name))
        children[name] = old.inode
        old.inode.nlink += 1
        old.inode.ctime = time.time_ns()
        self.inode.touch()

    def unlink(self, name: str, *, rmdir: bool = False) -> None:
        children = self._may_change(None, name, exists=True)
        child = children.get(name)
        if child is None:
            raise KernelError(errno.ENOENT)
        if rmdir:
            if not stat.S_ISDIR(child.mode):
                raise KernelError(errno.ENOTDIR)
            if child.children:
                raise KernelError(errno.ENOTEMPTY)
        elif stat.S_ISDIR(child.mode):
            raise KernelError(errno.EISDIR)
        self._drop(name, child)

    def _drop(self, name: str, child: MemInode) -> None:
        del self.inode.children[name]
        self.mount.fs.charge(-len(name))
        if stat.S_ISDIR(child.mode):
            child.nlink = 0
            self.inode.nlink -= 1
        else:
            child.nlink -= 1
            child.ctime = time.time_ns()
        self.inode.touch()
        self.mount.fs.release(child)

    def rename(self, name: str, newdir: Node, newname: str, flags: int) -> None:
        assert isinstance(newdir, MemNode)
        src = self._may_change(None, name, exists=True).get(name)
        if src is None:
            raise KernelError(errno.ENOENT)
        dst = newdir._may_change(None, newname, exists=True).get(newname)
        if flags & RENAME_NOREPLACE and dst is not None:
            raise KernelError(errno.EEXIST)
        if flags & RENAME_EXCHANGE and dst is None:
            raise KernelError(errno.ENOENT)
        old_path = join(self.guest, name)
        for moved in (src, dst) if flags & RENAME_EXCHANGE else (src,):
            path = old_path if moved is src else join(newdir.guest, newname)
            target = newdir.guest if moved is src else self.guest
            if moved is not None and stat.S_ISDIR(moved.mode) and (target + "/").startswith(path + "/"):
                raise KernelError(errno.EINVAL)
        if src is dst:
            return
        if flags & RENAME_EXCHANGE:
            assert dst is not None
            self.inode.children[name], newdir.inode.children[newname] = dst, src
            self._fix_dir_links(newdir, src, dst)
            return
        if dst is not None:
            if stat.S_ISDIR(src.mode) and not stat.S_ISDIR(dst.mode):
                raise KernelError(errno.ENOTDIR)
            if not stat.S_ISDIR(src.mode) and stat.S_ISDIR(dst.mode):
                raise KernelError(errno.EISDIR)
            if dst.children:
                raise KernelError(errno.ENOTEMPTY)
            newdir._drop(newname, dst)
        newdir.mount.fs.charge(len(newname))
        newdir.inode.children[newname] = src
        self._drop_name(name)
        if stat.S_ISDIR(src.mode) and newdir.inode is not self.inode:
            self.inode.nlink -= 1
            newdir.inode.nlink += 1
        src.ctime = time.time_ns()
        newdir.inode.touch()

    def _drop_name(self, name: str) -> None:
        del self.inode.children[name]
        self.mount.fs.charge(-len(name))
        self.inode.touch()

    def _fix_dir_links(self, newdir: MemNode, went: MemInode, came: MemInode) -> None:
        if newdir.inode is self.inode:
            return
        delta = stat.S_ISDIR(went.mode) - stat.S_ISDIR(came.mode)
        self.inode.nlink -= delta
        newdir.inode.nlink += delta

    # --- the file itself ----------------------------------------------------------------
    def open(self, k: Kernel, flags: int) -> MemFile:
        if flags & O_TRUNC and flags & O_ACCMODE != O_RDONLY:
            self.truncate(0)
        return MemFile(self, flags)

    def chmod(self, mode: int) -> None:
        self.inode.mode = stat.S_IFMT(self.inode.mode) | (mode & 0o7777)
        self.inode.ctime = time.time_ns()

    def utimens(self, atime: int | None, mtime: int | None) -> None:
        if atime is not None:
            self.inode.atime = atime
        if mtime is not None:
            self.inode.mtime = mtime
        self.inode.ctime = time.time_ns()

    def truncate(self, size: int) -> None:
        i = self.inode
        if stat.S_ISDIR(i.mode):
            raise KernelError(errno.EISDIR)
        if not stat.S_ISREG(i.mode):
            raise KernelError(errno.EINVAL)
        if size > _MAX_FILE:
            raise KernelError(errno.EFBIG)
        self.mount.fs.charge(size - len(i.data))
        if size < len(i.data):
            del i.data[size:]
        else:
            i.data.extend(bytes(size - len(i.data)))
        i.touch()

    def statfs(self) -> StatFs:
        fs = self.mount.fs
        blocks, free = fs.limit // 4096, max(fs.limit - fs.used, 0) // 4096
        files = fs.limit // _INODE_COST
        return StatFs(TMPFS_MAGIC, 4096, blocks, free, free, files, files - fs.used // _INODE_COST)


class MemFile(ViewFile):
    """An open in-memory regular file."""

    node: MemNode
    mmappable = True                        # mmap copies it (vnode.mmap_source)

    def __init__(self, node: MemNode, flags: int) -> None:
        self.node = node
        self.path = node.guest
        acc = flags & O_ACCMODE
        self.readable = acc in (O_RDONLY, O_RDWR)
        self.writable = acc in (O_WRONLY, O_RDWR)
        self.append = bool(flags & O_APPEND)
        self.pos = 0
        self._inode = node.inode
        self._inode.opens += 1
        self._closed = False

    @property
    def regular(self) -> bool:
        return True

    def read(self, n: int) -> bytes:
        data = self.pread(n, self.pos)
        self.pos += len(data)
        return data

    def pread(self, n: int, offset: int) -> bytes:
        if not self.readable:
            raise KernelError(errno.EBADF)
        self._inode.touch(access=True)
        return bytes(self._inode.data[offset:offset + n])

    def write(self, data: bytes) -> int:
        if self.append:
            self.pos = len(self._inode.data)
        n = self.pwrite(data, self.pos)
        self.pos += n
        return n

    def pwrite(self, data: bytes, offset: int) -> int:
        if not self.writable:
            raise KernelError(errno.EBADF)
        buf = self._inode.data
        if self.append:
            offset = len(buf)            # Linux: pwrite on O_APPEND appends
        end = offset + len(data)
        if end > _MAX_FILE:
            raise KernelError(errno.EFBIG)
        if end > len(buf):
            self.node.mount.fs.charge(end - len(buf))
            if offset > len(buf):
                buf.extend(bytes(offset - len(buf)))
        buf[offset:end] = data
        self._inode.touch()
        return len(data)

    def lseek(self, offset: int, whence: int) -> int:
        base = {0: 0, 1: self.pos, 2: len(self._inode.data)}.get(whence)
        if base is None:
            if whence in (3, 4):                    # SEEK_DATA, SEEK_HOLE: no holes here
                if offset >= len(self._inode.data):
                    raise KernelError(errno.ENXIO)
                self.pos = offset if whence == 3 else len(self._inode.data)
                return self.pos
            raise KernelError(errno.EINVAL)
        if base + offset < 0:
            raise KernelError(errno.EINVAL)
        self.pos = base + offset
        return self.pos

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inode.opens -= 1
            self.node.mount.fs.release(self._inode)


def memfd(mount: MemMount, k: Kernel, name: str) -> MemFile:
    """``memfd_create``: a file of the budget that no directory holds, open for
    reading and writing; gone at its last close."""
    inode = mount.fs.new_inode(stat.S_IFREG | 0o777, k.uid, k.gid)
    inode.nlink = 0
    return MemFile(MemNode(mount, f"/memfd:{name} (deleted)", inode), O_RDWR)
