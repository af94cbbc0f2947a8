"""System calls that name files by path, all through the file view (:mod:`._fs`).

``openat``, ``newfstatat``/``statx``, ``faccessat(2)``, ``readlinkat``,
``getcwd``, ``chdir``/``fchdir``, ``getdents64`` (every kind of directory: the
host's, ``/tmp``, ``/proc``, ``/dev``, the directories above a mount) and their
old non-``at`` forms. Changing calls (``mkdirat``, ``renameat2``, ...) are in
:mod:`._sys_fsops`.

A ``dirfd`` is ignored for an absolute path (``path_init``); otherwise it must
be a directory the view opened (``ENOTDIR``: a pipe, a regular file). A refusal
of the view is ``EACCES`` and reported once per path (``Kernel.deny``).
"""

from __future__ import annotations

import errno
import struct

from . import _sys_fsops  # noqa: F401  (registers its handlers)
from ._atpath import (
    AT_EACCESS,
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_NO_AUTOMOUNT,
    AT_STATX_SYNC_TYPE,
    AT_SYMLINK_NOFOLLOW,
    at_node,
    dir_base,
    fd_node,
    path_syscall,
)
from ._files import OpenFile
from ._kernel import Kernel
from ._registry import KernelError, s32, syscall
from ._structs import pack_stat, pack_statx
from ._sys_io import stat_of
from ._vnode import ACC_R, ACC_W, ACC_X, Denied, Dirent, DirStream, Node, dtype_of

__all__ = ["resolve", "AT_FDCWD", "AT_EMPTY_PATH"]

O_CREAT, O_WRONLY, O_TRUNC, O_CLOEXEC = 0o100, 1, 0o1000, 0o2000000
_DIRENT64 = struct.Struct("<QqHB")          # d_ino d_off d_reclen d_type, then d_name


def resolve(k: Kernel, dirfd: int, path: str, *, write: bool = False, follow: bool = True) -> str:
    """The host real path of a guest path that is a host file of the view
    (``execve``); a refusal of the view is reported. ``EACCES`` for a file that
    is not the host's (``/proc``, ``/tmp``)."""
    base = dir_base(k, dirfd, path)
    try:
        if base is None:
            return k.fs.resolve(path, k.cwd, write=write, follow=follow, k=k)
        node = k.fs.lookup(k, path, base, follow=follow)
    except Denied as exc:
        k.deny(exc.guest)
        raise KernelError(errno.EACCES) from None
    host = getattr(node, "host", None)
    if not isinstance(host, str):
        raise KernelError(errno.EACCES)
    return host


@path_syscall("openat")
def sys_openat(k: Kernel, dirfd: int, pathname: int, flags: int, mode: int) -> int:
    path = k.read_str(pathname)
    f = k.fs.open(k, path, dir_base(k, dirfd, path), flags & 0xFFFF_FFFF, mode & 0o7777)
    return k.files.install(f, cloexec=bool(flags & O_CLOEXEC))


@path_syscall("open")
def sys_open(k: Kernel, pathname: int, flags: int, mode: int) -> int:
    return sys_openat(k, AT_FDCWD, pathname, flags, mode)


@path_syscall("creat")
def sys_creat(k: Kernel, pathname: int, mode: int) -> int:
    return sys_openat(k, AT_FDCWD, pathname, O_CREAT | O_WRONLY | O_TRUNC, mode)


def _stat_at(k: Kernel, dirfd: int, pathname: int, flags: int, statx: bool) -> bytes:
    if flags & AT_EMPTY_PATH and not (pathname and k.read_str(pathname)) and s32(dirfd) != AT_FDCWD:
        return stat_of(k, k.files[s32(dirfd)], statx)
    st = at_node(k, dirfd, pathname, flags).stat()
    return pack_statx(st) if statx else pack_stat(st)


@path_syscall("newfstatat")
def sys_newfstatat(k: Kernel, dirfd: int, pathname: int, statbuf: int, flags: int) -> int:
    flags = s32(flags)
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT):
        raise KernelError(errno.EINVAL)
    k.write(statbuf, _stat_at(k, dirfd, pathname, flags, statx=False))
    return 0


@path_syscall("statx")
def sys_statx(k: Kernel, dirfd: int, pathname: int, flags: int, mask: int, statxbuf: int) -> int:
    """Every basic field, whatever ``mask`` asks (``STATX_BASIC_STATS``)."""
    flags, mask = s32(flags), mask & 0xFFFF_FFFF
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE) or \
            flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE or mask & 0x8000_0000:
        raise KernelError(errno.EINVAL)
    k.write(statxbuf, _stat_at(k, dirfd, pathname, flags, statx=True))
    return 0


@path_syscall("stat")
def sys_stat(k: Kernel, pathname: int, statbuf: int) -> int:
    return sys_newfstatat(k, AT_FDCWD, pathname, statbuf, 0)


@path_syscall("lstat")
def sys_lstat(k: Kernel, pathname: int, statbuf: int) -> int:
    return sys_newfstatat(k, AT_FDCWD, pathname, statbuf, AT_SYMLINK_NOFOLLOW)


@path_syscall("faccessat2")
def sys_faccessat2(k: Kernel, dirfd: int, pathname: int, mode: int, flags: int) -> int:
    """``do_faccessat``: ``F_OK`` is existence, ``R_OK|W_OK|X_OK`` the permission
    (a read-only part of the view is not writable). The guest's real and
    effective ids are one, so ``AT_EACCESS`` changes nothing."""
    mode, flags = s32(mode), s32(flags)
    if mode & ~7 or flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise KernelError(errno.EINVAL)
    node = at_node(k, dirfd, pathname, flags)
    if mode and not node.access(k, mode & (ACC_R | ACC_W | ACC_X)):
        raise KernelError(errno.EACCES)
    return 0


@path_syscall("faccessat")
def sys_faccessat(k: Kernel, dirfd: int, pathname: int, mode: int) -> int:
    return sys_faccessat2(k, dirfd, pathname, mode, 0)


@path_syscall("access")
def sys_access(k: Kernel, pathname: int, mode: int) -> int:
    return sys_faccessat2(k, AT_FDCWD, pathname, mode, 0)


@path_syscall("readlinkat")
def sys_readlinkat(k: Kernel, dirfd: int, pathname: int, buf: int, size: int) -> int:
    if s32(size) <= 0:
        raise KernelError(errno.EINVAL)
    node = at_node(k, dirfd, pathname, AT_EMPTY_PATH if pathname and not k.read_str(pathname) else 0,
                   follow=False)
    if not node.is_link():
        raise KernelError(errno.EINVAL)
    data = node.readlink().encode("utf-8", errors="surrogateescape")[:s32(size)]
    k.write(buf, data)
    return len(data)


@path_syscall("readlink")
def sys_readlink(k: Kernel, pathname: int, buf: int, size: int) -> int:
    return sys_readlinkat(k, AT_FDCWD, pathname, buf, size)


@syscall("getcwd")
def sys_getcwd(k: Kernel, buf: int, size: int) -> int:
    """The guest's path of its working directory (``d_path`` in the view)."""
    data = k.cwd.encode("utf-8", errors="surrogateescape") + b"\0"
    if len(data) > size:
        raise KernelError(errno.ERANGE)
    k.write(buf, data)
    return len(data)


def _enter(k: Kernel, node: Node) -> int:
    """``set_fs_pwd`` after ``chdir``'s checks: a directory the process may search."""
    if not node.is_dir():
        raise KernelError(errno.ENOTDIR)
    if not node.access(k, ACC_X):
        raise KernelError(errno.EACCES)
    k.cwd = node.guest
    return 0


@path_syscall("chdir")
def sys_chdir(k: Kernel, pathname: int) -> int:
    return _enter(k, k.fs.lookup(k, k.read_str(pathname)))


@path_syscall("fchdir")
def sys_fchdir(k: Kernel, fd: int) -> int:
    return _enter(k, fd_node(k, fd))


@syscall("chroot")
def sys_chroot(k: Kernel, pathname: int) -> int:
    """Needs ``CAP_SYS_CHROOT``: the guest is never root."""
    raise KernelError(errno.EPERM)


def _host_listing(f: OpenFile) -> list[Dirent]:
    out = []
    for e in f.getdents():
        try:
            out.append(Dirent(e.name, e.inode(), dtype_of(e.stat(follow_symlinks=False).st_mode)))
        except OSError:
            continue
    return out


@syscall("getdents64")
def sys_getdents64(k: Kernel, fd: int, dirp: int, count: int) -> int:
    """``iterate_dir``: whole ``linux_dirent64`` records from the directory's
    position; ``EINVAL`` when not even the next one fits."""
    f = k.files[s32(fd)]
    if not isinstance(f, DirStream):
        entries, pos = _host_listing(f), 0      # a host directory opened elsewhere
    else:
        entries, pos = f.listing(), f.pos
    out = bytearray()
    start = pos
    while pos < len(entries):
        entry = entries[pos]
        name = entry.name.encode("utf-8", errors="surrogateescape") + b"\0"
        reclen = (_DIRENT64.size + len(name) + 7) & ~7
        if len(out) + reclen > count:
            break
        out += _DIRENT64.pack(entry.ino, pos + 1, reclen, entry.dtype)
        out += name.ljust(reclen - _DIRENT64.size, b"\0")
        pos += 1
    if pos < len(entries) and pos == start:
        raise KernelError(errno.EINVAL)
    k.write(dirp, bytes(out))
    if isinstance(f, DirStream):
        f.pos = pos
    return len(out)


@syscall("getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr")
def sys_getxattr(k: Kernel) -> int:
    """No extended attributes (no ACLs, no SELinux labels) on the guest's files."""
    raise KernelError(errno.EOPNOTSUPP)
