"""System calls that change the file tree or a file's attributes, through the
view (:mod:`._fs`): ``mkdirat``, ``mknodat``, ``unlinkat``/``rmdir``,
``renameat2``, ``symlinkat``, ``linkat``, ``fchmodat``, ``utimensat``,
``truncate``, ``statfs``, ``memfd_create``, the ``chown`` family, ``fsync``.

Errors in ``fs/namei.c``'s order: the name must be a normal one (``.``/``..``:
``EEXIST`` for ``mkdir``, ``EISDIR`` for ``unlink``, ``EINVAL``/``ENOTEMPTY``
for ``rmdir``, ``EBUSY`` for ``rename``); an existing name is ``EEXIST`` before
the view's refusal of a read-only part (``filename_create`` checks it before
``mnt_want_write``'s answer), so ``mkdir -p`` works through read-only
directories. Renames and links across mounts are ``EXDEV`` (``mv`` then copies);
a mount point is ``EBUSY``.

``chown``/``fchown``/``lchown``/``fchownat`` succeed and change nothing: the
guest is one unprivileged user who owns its files, and the host's owners stay
the host's. ``fsync`` and friends have nothing to flush.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import time

from ._atpath import (
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_REMOVEDIR,
    AT_SYMLINK_FOLLOW,
    AT_SYMLINK_NOFOLLOW,
    at_node,
    dir_base,
    path_syscall,
)
from ._files import HostFile, host_call
from ._kernel import Kernel
from ._memfs import MemFile
from ._registry import KernelError, s32, syscall
from ._structs import TIMESPEC, TIMEVAL
from ._vnode import ACC_W, Node, StatFs

__all__: list[str] = []

RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
MFD_CLOEXEC, MFD_ALLOW_SEALING, MFD_HUGETLB, MFD_NOEXEC_SEAL, MFD_EXEC = 1, 2, 4, 8, 0x10
MFD_NAME_MAX = 249                      # NAME_MAX - strlen("memfd:")
PIPEFS_MAGIC = 0x50495045
_STATFS = struct.Struct("<qqQQQQQiiqqq32x")     # struct statfs; f_spare[4] zero
_UTIMBUF = struct.Struct("<qq")


def _parent(k: Kernel, dirfd: int, pathname: int) -> tuple[Node, str, bool]:
    path = k.read_str(pathname)
    return k.fs.lookup_parent(k, path, dir_base(k, dirfd, path))


def _existing(k: Kernel, parent: Node, name: str) -> Node | None:
    try:
        return k.fs.child(k, parent, name)
    except KernelError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


def _not_mounted(k: Kernel, node: Node) -> None:
    """A mount point (or a directory on the way to one) cannot go: ``EBUSY``."""
    if k.fs.is_mount_point(node.guest):
        raise KernelError(errno.EBUSY)


# --- creating -------------------------------------------------------------------------
@path_syscall("mkdirat")
def sys_mkdirat(k: Kernel, dirfd: int, pathname: int, mode: int) -> int:
    parent, name, _slash = _parent(k, dirfd, pathname)
    if name in (".", "..") or _existing(k, parent, name) is not None:
        raise KernelError(errno.EEXIST)
    parent.mkdir(k, name, mode & 0o7777)
    return 0


@path_syscall("mkdir")
def sys_mkdir(k: Kernel, pathname: int, mode: int) -> int:
    return sys_mkdirat(k, AT_FDCWD, pathname, mode)


@path_syscall("mknodat")
def sys_mknodat(k: Kernel, dirfd: int, pathname: int, mode: int, dev: int) -> int:
    """Regular files only: devices need ``CAP_MKNOD``; fifos and sockets on a
    path are not emulated (``EPERM``)."""
    mode &= 0xFFFF                          # umode_t
    kind = stat.S_IFMT(mode) or stat.S_IFREG
    if kind not in (stat.S_IFREG, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
        raise KernelError(errno.EINVAL)
    parent, name, _slash = _parent(k, dirfd, pathname)
    if name in (".", "..") or _existing(k, parent, name) is not None:
        raise KernelError(errno.EEXIST)
    if kind != stat.S_IFREG:
        raise KernelError(errno.EPERM)
    parent.create(k, name, 0, mode & 0o7777).close()
    return 0


@path_syscall("mknod")
def sys_mknod(k: Kernel, pathname: int, mode: int, dev: int) -> int:
    return sys_mknodat(k, AT_FDCWD, pathname, mode, dev)


@path_syscall("symlinkat")
def sys_symlinkat(k: Kernel, target: int, newdirfd: int, linkpath: int) -> int:
    text = k.read_str(target)
    if not text:
        raise KernelError(errno.ENOENT)
    parent, name, _slash = _parent(k, newdirfd, linkpath)
    if name in (".", "..") or _existing(k, parent, name) is not None:
        raise KernelError(errno.EEXIST)
    parent.symlink(k, name, text)
    return 0


@path_syscall("symlink")
def sys_symlink(k: Kernel, target: int, linkpath: int) -> int:
    return sys_symlinkat(k, target, AT_FDCWD, linkpath)


@path_syscall("linkat")
def sys_linkat(k: Kernel, olddirfd: int, oldpath: int, newdirfd: int, newpath: int, flags: int) -> int:
    flags = s32(flags)
    if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
        raise KernelError(errno.EINVAL)
    old = at_node(k, olddirfd, oldpath, flags, follow=bool(flags & AT_SYMLINK_FOLLOW))
    parent, name, _slash = _parent(k, newdirfd, newpath)
    if name in (".", "..") or _existing(k, parent, name) is not None:
        raise KernelError(errno.EEXIST)
    if old.fs is not parent.fs or old.fs is None:
        raise KernelError(errno.EXDEV)
    if old.is_dir():
        raise KernelError(errno.EPERM)
    parent.link(k, old, name)
    return 0


@path_syscall("link")
def sys_link(k: Kernel, oldpath: int, newpath: int) -> int:
    return sys_linkat(k, AT_FDCWD, oldpath, AT_FDCWD, newpath, 0)


# --- removing and renaming --------------------------------------------------------------
@path_syscall("unlinkat")
def sys_unlinkat(k: Kernel, dirfd: int, pathname: int, flags: int) -> int:
    flags = s32(flags)
    if flags & ~AT_REMOVEDIR:
        raise KernelError(errno.EINVAL)
    rmdir = bool(flags & AT_REMOVEDIR)
    parent, name, slash = _parent(k, dirfd, pathname)
    if name in (".", ".."):
        raise KernelError((errno.EINVAL if name == "." else errno.ENOTEMPTY) if rmdir else errno.EISDIR)
    child = k.fs.child(k, parent, name)
    _not_mounted(k, child)
    if not rmdir and slash:
        raise KernelError(errno.EISDIR if child.is_dir() else errno.ENOTDIR)
    parent.unlink(name, rmdir=rmdir)
    return 0


@path_syscall("unlink")
def sys_unlink(k: Kernel, pathname: int) -> int:
    return sys_unlinkat(k, AT_FDCWD, pathname, 0)


@path_syscall("rmdir")
def sys_rmdir(k: Kernel, pathname: int) -> int:
    return sys_unlinkat(k, AT_FDCWD, pathname, AT_REMOVEDIR)


@path_syscall("renameat2")
def sys_renameat2(k: Kernel, olddirfd: int, oldpath: int, newdirfd: int, newpath: int, flags: int) -> int:
    """``do_renameat2``: ``RENAME_NOREPLACE`` and ``RENAME_EXCHANGE`` (not both);
    ``RENAME_WHITEOUT`` needs ``CAP_MKNOD``."""
    flags &= 0xFFFF_FFFF
    if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) or \
            flags & RENAME_NOREPLACE and flags & RENAME_EXCHANGE:
        raise KernelError(errno.EINVAL)
    if flags & RENAME_WHITEOUT:
        raise KernelError(errno.EPERM)
    op, oname, oslash = _parent(k, olddirfd, oldpath)
    np, nname, nslash = _parent(k, newdirfd, newpath)
    if op.fs is not np.fs:
        raise KernelError(errno.EXDEV)
    if oname in (".", "..") or nname in (".", ".."):
        raise KernelError(errno.EBUSY)
    src = k.fs.child(k, op, oname)
    _not_mounted(k, src)
    dst = _existing(k, np, nname)
    if dst is not None:
        _not_mounted(k, dst)
    elif flags & RENAME_EXCHANGE:
        raise KernelError(errno.ENOENT)
    if (oslash or nslash) and not src.is_dir():
        raise KernelError(errno.ENOTDIR)
    op.rename(oname, np, nname, flags)
    return 0


@path_syscall("renameat")
def sys_renameat(k: Kernel, olddirfd: int, oldpath: int, newdirfd: int, newpath: int) -> int:
    return sys_renameat2(k, olddirfd, oldpath, newdirfd, newpath, 0)


@path_syscall("rename")
def sys_rename(k: Kernel, oldpath: int, newpath: int) -> int:
    return sys_renameat2(k, AT_FDCWD, oldpath, AT_FDCWD, newpath, 0)


# --- attributes -------------------------------------------------------------------------
@path_syscall("fchmodat")
def sys_fchmodat(k: Kernel, dirfd: int, pathname: int, mode: int) -> int:
    at_node(k, dirfd, pathname, 0).chmod(mode & 0o7777)
    return 0


@path_syscall("chmod")
def sys_chmod(k: Kernel, pathname: int, mode: int) -> int:
    return sys_fchmodat(k, AT_FDCWD, pathname, mode)


@path_syscall("fchmod")
def sys_fchmod(k: Kernel, fd: int, mode: int) -> int:
    node = getattr(k.files[s32(fd)], "node", None)
    if isinstance(node, Node):              # a pipe's mode is its own business
        node.chmod(mode & 0o7777)
    return 0


@path_syscall("fchownat")
def sys_fchownat(k: Kernel, dirfd: int, pathname: int, owner: int, group: int, flags: int) -> int:
    """Nothing changes (see the module docstring); the file must exist."""
    flags = s32(flags)
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise KernelError(errno.EINVAL)
    at_node(k, dirfd, pathname, flags)
    return 0


@path_syscall("chown")
def sys_chown(k: Kernel, pathname: int, owner: int, group: int) -> int:
    return sys_fchownat(k, AT_FDCWD, pathname, owner, group, 0)


@path_syscall("lchown")
def sys_lchown(k: Kernel, pathname: int, owner: int, group: int) -> int:
    return sys_fchownat(k, AT_FDCWD, pathname, owner, group, AT_SYMLINK_NOFOLLOW)


@syscall("fchown")
def sys_fchown(k: Kernel, fd: int, owner: int, group: int) -> int:
    k.files[s32(fd)]
    return 0


def _times(k: Kernel, times: int) -> tuple[int | None, int | None]:
    """``utimensat``'s two timespecs: ``UTIME_NOW``, ``UTIME_OMIT`` (``None``)."""
    now = time.time_ns()
    if not times:
        return now, now
    raw = k.read(times, 2 * TIMESPEC.size)
    out: list[int | None] = []
    for i in range(2):
        sec, nsec = TIMESPEC.unpack_from(raw, i * TIMESPEC.size)
        if nsec == UTIME_OMIT:
            out.append(None)
        elif nsec == UTIME_NOW:
            out.append(now)
        elif not 0 <= nsec < 10**9:
            raise KernelError(errno.EINVAL)
        else:
            out.append(_clamp(sec * 10**9 + nsec))
    return out[0], out[1]


def _clamp(ns: int) -> int:
    """``timestamp_truncate``: a time the file system cannot hold is its limit."""
    return max(-(1 << 63), min(ns, (1 << 63) - 1))


def _utimens(k: Kernel, node: Node, atime: int | None, mtime: int | None) -> int:
    if atime is None and mtime is None:
        return 0
    node.utimens(atime, mtime)
    return 0


@path_syscall("utimensat")
def sys_utimensat(k: Kernel, dirfd: int, pathname: int, times: int, flags: int) -> int:
    """A NULL ``pathname`` is ``futimens`` on ``dirfd`` (``do_utimes_fd``)."""
    flags = s32(flags)
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise KernelError(errno.EINVAL)
    atime, mtime = _times(k, times)
    if not pathname:
        if flags & AT_SYMLINK_NOFOLLOW:
            raise KernelError(errno.EINVAL)
        node = getattr(k.files[s32(dirfd)], "node", None)
        return _utimens(k, node, atime, mtime) if isinstance(node, Node) else 0
    return _utimens(k, at_node(k, dirfd, pathname, flags), atime, mtime)


@path_syscall("futimesat")
def sys_futimesat(k: Kernel, dirfd: int, pathname: int, tv: int) -> int:
    atime = mtime = time.time_ns()
    if tv:
        raw = k.read(tv, 2 * TIMEVAL.size)
        (asec, ausec), (msec, musec) = TIMEVAL.unpack_from(raw, 0), TIMEVAL.unpack_from(raw, TIMEVAL.size)
        if not (0 <= ausec < 10**6 and 0 <= musec < 10**6):
            raise KernelError(errno.EINVAL)
        atime, mtime = _clamp(asec * 10**9 + ausec * 1000), _clamp(msec * 10**9 + musec * 1000)
    return _utimens(k, at_node(k, dirfd, pathname, 0), atime, mtime)


@path_syscall("utimes")
def sys_utimes(k: Kernel, pathname: int, tv: int) -> int:
    return sys_futimesat(k, AT_FDCWD, pathname, tv)


@path_syscall("utime")
def sys_utime(k: Kernel, pathname: int, buf: int) -> int:
    atime = mtime = time.time_ns()
    if buf:
        asec, msec = _UTIMBUF.unpack(k.read(buf, _UTIMBUF.size))
        atime, mtime = _clamp(asec * 10**9), _clamp(msec * 10**9)
    return _utimens(k, at_node(k, AT_FDCWD, pathname, 0), atime, mtime)


@path_syscall("truncate")
def sys_truncate(k: Kernel, pathname: int, length: int) -> int:
    if length >> 63:
        raise KernelError(errno.EINVAL)
    node = at_node(k, AT_FDCWD, pathname, 0)
    if node.is_dir():
        raise KernelError(errno.EISDIR)
    if not node.access(k, ACC_W):
        raise KernelError(errno.EACCES)
    node.truncate(length)
    return 0


@path_syscall("ftruncate")
def sys_ftruncate(k: Kernel, fd: int, length: int) -> int:
    """``do_sys_ftruncate``: a regular file open for writing, else ``EINVAL``."""
    f = k.files[s32(fd)]
    if length >> 63 or not f.writable or not f.regular:
        raise KernelError(errno.EINVAL)
    if isinstance(f, HostFile):
        host_call(os.ftruncate, f.fd, length)
    elif isinstance(f, MemFile):
        f.node.truncate(length)
    else:
        raise KernelError(errno.EINVAL)
    return 0


# --- file systems -----------------------------------------------------------------------
def _write_statfs(k: Kernel, buf: int, s: StatFs) -> int:
    k.write(buf, _STATFS.pack(s.f_type, s.f_bsize, s.f_blocks, s.f_bfree, s.f_bavail, s.f_files,
                              s.f_ffree, 0, 0, s.f_namelen, s.f_frsize, s.f_flags))
    return 0


@path_syscall("statfs")
def sys_statfs(k: Kernel, pathname: int, buf: int) -> int:
    return _write_statfs(k, buf, at_node(k, AT_FDCWD, pathname, 0).statfs())


@path_syscall("fstatfs")
def sys_fstatfs(k: Kernel, fd: int, buf: int) -> int:
    node = getattr(k.files[s32(fd)], "node", None)
    s = node.statfs() if isinstance(node, Node) else StatFs(PIPEFS_MAGIC, 4096, 0, 0, 0, 0, 0)
    return _write_statfs(k, buf, s)


@syscall("memfd_create")
def sys_memfd_create(k: Kernel, name: int, flags: int) -> int:
    """An anonymous in-memory file (``mm/memfd.c``), charged to the run's tmpfs
    budget; ``MFD_HUGETLB`` is not offered (``EINVAL``)."""
    text = k.read_str(name, MFD_NAME_MAX + 2)
    if len(text.encode("utf-8", "surrogateescape")) > MFD_NAME_MAX:
        raise KernelError(errno.EINVAL)
    flags &= 0xFFFF_FFFF
    if flags & ~(MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL | MFD_EXEC) or \
            flags & MFD_EXEC and flags & MFD_NOEXEC_SEAL:
        raise KernelError(errno.EINVAL)
    return k.files.install(k.fs.memfd(k, text), cloexec=bool(flags & MFD_CLOEXEC))


@syscall("fsync", "fdatasync", "syncfs")
def sys_fsync(k: Kernel, fd: int) -> int:
    k.files[s32(fd)]
    return 0


@syscall("sync")
def sys_sync(k: Kernel) -> int:
    return 0
