"""System calls on descriptors: read, write, seek, stat, ioctl, fcntl, dup, close."""

from __future__ import annotations

import errno
import os
import struct

from ._files import OpenFile
from ._kernel import Kernel
from ._registry import KernelError, s32, syscall
from ._structs import IOVEC, fifo_stat, fifo_statx, pack_stat, pack_statx

# ioctl requests (include/uapi/asm-generic/ioctls.h)
FIONREAD = 0x541B
# fcntl commands (include/uapi/asm-generic/fcntl.h)
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC = 0, 1, 2, 3, 4, 1030
O_RDONLY, O_WRONLY, O_RDWR = 0, 1, 2
_MAX_IO = 1 << 30


@syscall("read")
def sys_read(k: Kernel, fd: int, buf: int, count: int) -> int:
    data = k.files[s32(fd)].read(min(count, _MAX_IO))
    k.write(buf, data)
    return len(data)


@syscall("pread64")
def sys_pread64(k: Kernel, fd: int, buf: int, count: int, offset: int) -> int:
    data = k.files[s32(fd)].pread(min(count, _MAX_IO), offset)
    k.write(buf, data)
    return len(data)


@syscall("write")
def sys_write(k: Kernel, fd: int, buf: int, count: int) -> int:
    return k.files[s32(fd)].write(k.read(buf, min(count, _MAX_IO)))


@syscall("pwrite64")
def sys_pwrite64(k: Kernel, fd: int, buf: int, count: int, offset: int) -> int:
    f = k.files[s32(fd)]
    here = f.lseek(0, os.SEEK_CUR)
    f.lseek(offset, os.SEEK_SET)
    try:
        return f.write(k.read(buf, min(count, _MAX_IO)))
    finally:
        f.lseek(here, os.SEEK_SET)


def _iovecs(k: Kernel, iov: int, iovcnt: int) -> list[tuple[int, int]]:
    if not 0 <= s32(iovcnt) <= 1024:
        raise KernelError(errno.EINVAL)
    raw = k.read(iov, IOVEC.size * iovcnt)
    return [IOVEC.unpack_from(raw, i * IOVEC.size) for i in range(iovcnt)]


@syscall("writev")
def sys_writev(k: Kernel, fd: int, iov: int, iovcnt: int) -> int:
    f = k.files[s32(fd)]
    data = b"".join(k.read(base, length) for base, length in _iovecs(k, iov, iovcnt))
    return f.write(data) if data else 0


@syscall("readv")
def sys_readv(k: Kernel, fd: int, iov: int, iovcnt: int) -> int:
    f = k.files[s32(fd)]
    total = 0
    for base, length in _iovecs(k, iov, iovcnt):
        data = f.read(length)
        k.write(base, data)
        total += len(data)
        if len(data) < length:
            break
    return total


@syscall("lseek")
def sys_lseek(k: Kernel, fd: int, offset: int, whence: int) -> int:
    if offset >> 63:
        offset -= 1 << 64
    return k.files[s32(fd)].lseek(offset, s32(whence))


def stat_of(k: Kernel, f: OpenFile, statx: bool = False) -> bytes:
    """``struct stat`` (or ``struct statx``) of an open file."""
    st = f.host_stat()
    if st is None:
        return fifo_statx(k.uid, k.gid) if statx else fifo_stat(k.uid, k.gid)
    return pack_statx(st) if statx else pack_stat(st)


@syscall("fstat")
def sys_fstat(k: Kernel, fd: int, statbuf: int) -> int:
    k.write(statbuf, stat_of(k, k.files[s32(fd)]))
    return 0


@syscall("fadvise64")
def sys_fadvise64(k: Kernel, fd: int) -> int:
    k.files[s32(fd)]
    return 0


@syscall("close")
def sys_close(k: Kernel, fd: int) -> int:
    k.files.close(s32(fd))
    return 0


@syscall("ioctl")
def sys_ioctl(k: Kernel, fd: int, request: int, arg: int) -> int:
    """No descriptor is a terminal: TCGETS, TIOCGWINSZ and the rest fail with
    ENOTTY, so the C library buffers every stream as a pipe or file."""
    k.files[s32(fd)]
    if request & 0xFFFF_FFFF == FIONREAD:
        k.write(arg, struct.pack("<i", 0))
        return 0
    raise KernelError(errno.ENOTTY)


@syscall("fcntl")
def sys_fcntl(k: Kernel, fd: int, cmd: int, arg: int) -> int:
    f = k.files[s32(fd)]
    cmd = s32(cmd)
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        return k.files.install(f, lowest=s32(arg))
    if cmd in (F_GETFD, F_SETFD, F_SETFL):
        return 0
    if cmd == F_GETFL:
        return _access_mode(f)
    raise KernelError(errno.EINVAL)


def _access_mode(f: OpenFile) -> int:
    if f.writable:
        return O_WRONLY if f.path.startswith("pipe:") else O_RDWR
    return O_RDONLY


@syscall("dup")
def sys_dup(k: Kernel, fd: int) -> int:
    return k.files.install(k.files[s32(fd)])


@syscall("dup2")
def sys_dup2(k: Kernel, oldfd: int, newfd: int) -> int:
    f = k.files[s32(oldfd)]
    if s32(oldfd) == s32(newfd):
        return s32(newfd)
    return k.files.install(f, s32(newfd))


@syscall("dup3")
def sys_dup3(k: Kernel, oldfd: int, newfd: int, flags: int) -> int:
    if s32(oldfd) == s32(newfd):
        raise KernelError(errno.EINVAL)
    return k.files.install(k.files[s32(oldfd)], s32(newfd))
