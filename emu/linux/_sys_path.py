"""System calls on paths, all through the access policy (:mod:`emu.linux._fs`).

``openat``, ``newfstatat``, ``faccessat``, ``readlinkat``, ``getdents64``,
``getcwd``, ``unlinkat``, ``mkdirat`` and their old non-``at`` forms.
"""

from __future__ import annotations

import errno
import os
import struct

from ._files import HostFile, host_call
from ._kernel import Kernel
from ._registry import KernelError, s32, syscall
from ._structs import pack_stat, pack_statx
from ._sys_io import stat_of

# include/uapi/asm-generic/fcntl.h, include/uapi/linux/fcntl.h
O_ACCMODE, O_RDONLY = 3, 0
O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o100, 0o200, 0o1000, 0o2000
O_DIRECTORY = 0o200000
_PASSED_FLAGS = O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_DIRECTORY
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_EMPTY_PATH = 0x100, 0x200, 0x1000
W_OK = 2
PROC_SELF_EXE = "/proc/self/exe"
_DIRENT64 = struct.Struct("<QqHB")          # d_ino d_off d_reclen d_type, then d_name
_DT_DIR, _DT_REG, _DT_LNK = 4, 8, 10


def _base(k: Kernel, dirfd: int) -> str:
    dirfd = s32(dirfd)
    if dirfd == AT_FDCWD:
        return k.cwd
    f = k.files[dirfd]
    if not isinstance(f, HostFile):
        raise KernelError(errno.ENOTDIR)
    return f.realpath


def resolve(k: Kernel, dirfd: int, path: str, *, write: bool = False, follow: bool = True) -> str:
    """Host real path of a guest path, or ``EACCES`` (reported) when denied."""
    base = _base(k, dirfd) if not path.startswith("/") else "/"
    try:
        return k.fs.resolve(path, base, write=write, follow=follow)
    except KernelError as exc:
        if exc.errno == errno.EACCES:
            k.deny(os.path.normpath(os.path.join(base, path)))
        raise


@syscall("openat")
def sys_openat(k: Kernel, dirfd: int, pathname: int, flags: int, mode: int) -> int:
    path = k.read_str(pathname)
    flags = s32(flags)
    write = (flags & O_ACCMODE) != O_RDONLY or bool(flags & (O_CREAT | O_TRUNC))
    real = resolve(k, dirfd, path, write=write)
    fd = host_call(os.open, real, (flags & _PASSED_FLAGS) | os.O_CLOEXEC, mode & 0o7777)
    return k.files.install(HostFile(path, real, fd, write))


@syscall("open")
def sys_open(k: Kernel, pathname: int, flags: int, mode: int) -> int:
    return sys_openat(k, AT_FDCWD, pathname, flags, mode)


def _stat_at(k: Kernel, dirfd: int, pathname: int, flags: int, statx: bool) -> bytes:
    path = k.read_str(pathname) if pathname else ""
    if not path and flags & AT_EMPTY_PATH:
        return stat_of(k, k.files[s32(dirfd)], statx)
    follow = not flags & AT_SYMLINK_NOFOLLOW
    st = host_call(os.stat if follow else os.lstat, resolve(k, dirfd, path, follow=follow))
    return pack_statx(st) if statx else pack_stat(st)


@syscall("newfstatat")
def sys_newfstatat(k: Kernel, dirfd: int, pathname: int, statbuf: int, flags: int) -> int:
    k.write(statbuf, _stat_at(k, dirfd, pathname, flags, statx=False))
    return 0


@syscall("statx")
def sys_statx(k: Kernel, dirfd: int, pathname: int, flags: int, mask: int, statxbuf: int) -> int:
    k.write(statxbuf, _stat_at(k, dirfd, pathname, flags, statx=True))
    return 0


@syscall("stat")
def sys_stat(k: Kernel, pathname: int, statbuf: int) -> int:
    return sys_newfstatat(k, AT_FDCWD, pathname, statbuf, 0)


@syscall("lstat")
def sys_lstat(k: Kernel, pathname: int, statbuf: int) -> int:
    return sys_newfstatat(k, AT_FDCWD, pathname, statbuf, AT_SYMLINK_NOFOLLOW)


@syscall("faccessat", "faccessat2")
def sys_faccessat(k: Kernel, dirfd: int, pathname: int, mode: int) -> int:
    real = resolve(k, dirfd, k.read_str(pathname), write=bool(mode & W_OK))
    if not os.path.exists(real):
        raise KernelError(errno.ENOENT)
    if not os.access(real, mode & 7):
        raise KernelError(errno.EACCES)
    return 0


@syscall("access")
def sys_access(k: Kernel, pathname: int, mode: int) -> int:
    return sys_faccessat(k, AT_FDCWD, pathname, mode)


@syscall("readlinkat")
def sys_readlinkat(k: Kernel, dirfd: int, pathname: int, buf: int, size: int) -> int:
    path = k.read_str(pathname)
    if path == PROC_SELF_EXE:
        target = k.exe_path
    else:
        target = host_call(os.readlink, resolve(k, dirfd, path, follow=False))
    data = target.encode("utf-8", errors="surrogateescape")[:s32(size)]
    k.write(buf, data)
    return len(data)


@syscall("readlink")
def sys_readlink(k: Kernel, pathname: int, buf: int, size: int) -> int:
    return sys_readlinkat(k, AT_FDCWD, pathname, buf, size)


@syscall("getcwd")
def sys_getcwd(k: Kernel, buf: int, size: int) -> int:
    data = k.cwd.encode() + b"\0"
    if len(data) > size:
        raise KernelError(errno.ERANGE)
    k.write(buf, data)
    return len(data)


@syscall("getdents64")
def sys_getdents64(k: Kernel, fd: int, dirp: int, count: int) -> int:
    pending = k.files[s32(fd)].getdents()
    out = bytearray()
    while pending:
        entry = pending[0]
        name = entry.name.encode("utf-8", errors="surrogateescape") + b"\0"
        reclen = (_DIRENT64.size + len(name) + 7) & ~7
        if len(out) + reclen > count:
            break
        dtype = _DT_LNK if entry.is_symlink() else _DT_DIR if entry.is_dir() else _DT_REG
        out += _DIRENT64.pack(entry.inode(), len(out) + reclen, reclen, dtype)
        out += name.ljust(reclen - _DIRENT64.size, b"\0")
        pending.pop(0)
    if pending and not out:
        raise KernelError(errno.EINVAL)
    k.write(dirp, bytes(out))
    return len(out)


@syscall("unlinkat")
def sys_unlinkat(k: Kernel, dirfd: int, pathname: int, flags: int) -> int:
    real = resolve(k, dirfd, k.read_str(pathname), write=True, follow=False)
    host_call(os.rmdir if flags & AT_REMOVEDIR else os.unlink, real)
    return 0


@syscall("unlink")
def sys_unlink(k: Kernel, pathname: int) -> int:
    return sys_unlinkat(k, AT_FDCWD, pathname, 0)


@syscall("mkdirat")
def sys_mkdirat(k: Kernel, dirfd: int, pathname: int, mode: int) -> int:
    path = resolve(k, dirfd, k.read_str(pathname), write=True, follow=False)
    host_call(os.mkdir, path, mode & 0o7777)
    return 0


@syscall("mkdir")
def sys_mkdir(k: Kernel, pathname: int, mode: int) -> int:
    return sys_mkdirat(k, AT_FDCWD, pathname, mode)


@syscall("getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr")
def sys_getxattr(k: Kernel) -> int:
    """No extended attributes (no ACLs, no SELinux labels) on the guest's files."""
    raise KernelError(errno.EOPNOTSUPP)
