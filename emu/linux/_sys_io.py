"""System calls on descriptors: read, write, seek, stat, ioctl, fcntl, dup, close.

Reads and writes move data between guest memory and the file :data:`IO_CHUNK`
bytes at a time, so the host holds at most one chunk whatever count the guest
passes. A transfer covers only guest memory that is mapped (writable, for a
read) from the buffer on, at most ``MAX_RW_COUNT`` bytes, as ``vfs_read`` and
``copy_to_user`` bound it: the guest cannot make the host allocate more than it
has mapped. A regular file is read until the count or its end; anything else
(standard input, pipes, devices) gets one read of at most a chunk, which returns
what is there, as a pipe's ``read`` does.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence

from .._memory import PROT_R, PROT_W
from ._files import OpenFile
from ._ioctl import ioctl
from ._kernel import Kernel
from ._mm import TASK_SIZE
from ._pipe import WouldBlock
from ._registry import KernelError, s32, syscall
from ._signal import SI_USER, SIGPIPE, siginfo
from ._structs import IOVEC, fifo_stat, fifo_statx, pack_stat, pack_statx
from ._wait import block_on

# fcntl commands (include/uapi/asm-generic/fcntl.h)
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC = 0, 1, 2, 3, 4, 1030
O_RDONLY, O_WRONLY, O_RDWR = 0, 1, 2
O_APPEND, O_NONBLOCK, O_CLOEXEC = 0o2000, 0o4000, 0o2000000
FD_CLOEXEC = 1
_SETFL_MASK = O_APPEND | O_NONBLOCK        # what F_SETFL may change here
MAX_RW_COUNT = 0x7FFF_F000          # INT_MAX & PAGE_MASK (include/linux/fs.h)
IO_CHUNK = 1 << 20                  # host bytes per step of a transfer
UIO_MAXIOV = 1024
_LOFF_MAX = (1 << 63) - 1

Segments = list[tuple[int, int]]     # (guest address, bytes) of one transfer


def _access_ok(buf: int, count: int) -> None:
    """``access_ok()``: the buffer lies below the top of user space."""
    if count > TASK_SIZE or buf > TASK_SIZE - count:
        raise KernelError(errno.EFAULT)


def _pos(offset: int, count: int) -> int:
    """``loff_t`` of ``pread64``/``pwrite64``: ``EINVAL`` when negative or when the
    transfer would pass ``LLONG_MAX`` (``ksys_pread64``, ``rw_verify_area``)."""
    if offset > _LOFF_MAX or count > _LOFF_MAX - offset:
        raise KernelError(errno.EINVAL)
    return offset


def _segments(k: Kernel, vecs: Sequence[tuple[int, int]], perms: int) -> Segments:
    """The guest memory a transfer may use: the vectors, up to the first byte not
    mapped with ``perms``, ``MAX_RW_COUNT`` bytes at most. ``EFAULT`` if the
    first byte asked for is not."""
    segs: Segments = []
    room = MAX_RW_COUNT
    for base, length in vecs:
        length = min(length, room)
        if not length:
            continue
        n = k.mem.span(base, length, perms)
        if n:
            segs.append((base, n))
            room -= n
        if n < length:
            if not segs:
                raise KernelError(errno.EFAULT)
            break
    return segs


def _scatter(k: Kernel, segs: Segments, at: int, data: bytes) -> None:
    """Write ``data`` into the segments, starting ``at`` bytes into them."""
    view = memoryview(data)
    for addr, n in segs:
        if at >= n:
            at -= n
            continue
        take = min(n - at, len(view))
        k.write(addr + at, bytes(view[:take]))
        view = view[take:]
        at = 0
        if not view:
            return


def _gather(k: Kernel, segs: Segments, at: int, size: int) -> bytes:
    """``size`` bytes of the segments, starting ``at`` bytes into them."""
    out = bytearray()
    for addr, n in segs:
        if at >= n:
            at -= n
            continue
        take = min(n - at, size - len(out))
        out += k.read(addr + at, take)
        at = 0
        if len(out) == size:
            break
    return bytes(out)


def read_into(k: Kernel, f: OpenFile, vecs: Sequence[tuple[int, int]], offset: int | None = None) -> int:
    """Read from ``f`` (at ``offset``, or its position) into guest memory; the count."""
    segs = _segments(k, vecs, PROT_W)
    room = sum(n for _, n in segs)
    if not room:
        return len(f.read(0) if offset is None else f.pread(0, offset))
    done = 0
    while done < room:
        want = min(IO_CHUNK, room - done)
        try:
            data = f.read(want) if offset is None else f.pread(want, offset + done)
        except KernelError:
            if done:
                break
            raise
        _scatter(k, segs, done, data)
        done += len(data)
        if len(data) < want or not f.regular:
            break
    return done


def write_from(k: Kernel, f: OpenFile, vecs: Sequence[tuple[int, int]], offset: int | None = None) -> int:
    """Write guest memory to ``f`` (at ``offset``, or its position); the count."""
    segs = _segments(k, vecs, PROT_R)
    room = sum(n for _, n in segs)
    if not room:
        return f.write(b"") if offset is None else f.pwrite(b"", offset)
    done = 0
    while done < room:
        data = _gather(k, segs, done, min(IO_CHUNK, room - done))
        try:
            n = f.write(data) if offset is None else f.pwrite(data, offset + done)
        except KernelError:
            if done:
                break
            raise
        done += n
        if n < len(data):
            break
    return done


def waiting(k: Kernel, transfer: Callable[[], int], *files: OpenFile) -> int:
    """Run a transfer that may wait (a pipe, :mod:`._pipe`): when one of ``files``
    is non-blocking it fails with ``EAGAIN``, else the call waits and runs again
    when woken. ``EPIPE`` also sends ``SIGPIPE`` to the thread (``pipe_write``)."""
    try:
        return transfer()
    except WouldBlock as wait:
        if any(f.status_flags & O_NONBLOCK for f in files):
            raise
        block_on(k, wait.what, [wait.queue])
        raise                                       # pragma: no cover - block_on raises
    except KernelError as exc:
        if exc.errno == errno.EPIPE:
            send_sigpipe(k)
        raise


def send_sigpipe(k: Kernel) -> None:
    """A write found no reader: ``SIGPIPE`` to the writing thread (``pipe_write``)."""
    task = k.m.current_task
    k.signals.send(SIGPIPE, siginfo(SIGPIPE, SI_USER, pid=k.pid, uid=k.uid), task)
    k.signals.recheck()


@syscall("read")
def sys_read(k: Kernel, fd: int, buf: int, count: int) -> int:
    f = k.files[s32(fd)]
    _access_ok(buf, count)
    return waiting(k, lambda: read_into(k, f, [(buf, count)]), f)


@syscall("pread64")
def sys_pread64(k: Kernel, fd: int, buf: int, count: int, offset: int) -> int:
    pos = _pos(offset, count)
    f = k.files[s32(fd)]
    _access_ok(buf, count)
    return read_into(k, f, [(buf, count)], pos)


@syscall("write")
def sys_write(k: Kernel, fd: int, buf: int, count: int) -> int:
    f = k.files[s32(fd)]
    _access_ok(buf, count)
    return waiting(k, lambda: write_from(k, f, [(buf, count)]), f)


@syscall("pwrite64")
def sys_pwrite64(k: Kernel, fd: int, buf: int, count: int, offset: int) -> int:
    pos = _pos(offset, count)
    f = k.files[s32(fd)]
    _access_ok(buf, count)
    return write_from(k, f, [(buf, count)], pos)


def _iovecs(k: Kernel, iov: int, iovcnt: int) -> list[tuple[int, int]]:
    """``import_iovec``: at most ``UIO_MAXIOV`` vectors, each length a valid
    ``ssize_t``, each buffer below the top of user space."""
    if not 0 <= s32(iovcnt) <= UIO_MAXIOV:
        raise KernelError(errno.EINVAL)
    raw = k.read(iov, IOVEC.size * iovcnt)
    vecs = [IOVEC.unpack_from(raw, i * IOVEC.size) for i in range(iovcnt)]
    room = MAX_RW_COUNT
    for base, length in vecs:
        if length > _LOFF_MAX:
            raise KernelError(errno.EINVAL)
        length = min(length, room)
        _access_ok(base, length)
        room -= length
    return vecs


@syscall("writev")
def sys_writev(k: Kernel, fd: int, iov: int, iovcnt: int) -> int:
    f = k.files[s32(fd)]
    vecs = _iovecs(k, iov, iovcnt)
    return waiting(k, lambda: write_from(k, f, vecs), f)


@syscall("readv")
def sys_readv(k: Kernel, fd: int, iov: int, iovcnt: int) -> int:
    """One read for all the vectors, as ``pipe_read`` fills an ``iov_iter``: a
    stream is read once, never again for the next vector (musl reads stdin so)."""
    f = k.files[s32(fd)]
    vecs = _iovecs(k, iov, iovcnt)
    return waiting(k, lambda: read_into(k, f, vecs), f)


@syscall("lseek")
def sys_lseek(k: Kernel, fd: int, offset: int, whence: int) -> int:
    if offset >> 63:
        offset -= 1 << 64
    return k.files[s32(fd)].lseek(offset, s32(whence))


def stat_of(k: Kernel, f: OpenFile, statx: bool = False) -> bytes:
    """``struct stat`` (or ``struct statx``) of an open file: its host file's, what
    the file says it is (a standard stream on the host's terminal: that
    character device; an eventfd: its anonymous inode), else a pipe's."""
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
    """Only a standard stream on the host's terminal is a terminal (:mod:`._ioctl`):
    elsewhere TCGETS and the rest fail with ENOTTY, so ``isatty`` is false and
    the C library buffers the stream as a pipe or file."""
    fd = s32(fd)
    return ioctl(k, fd, k.files[fd], request & 0xFFFF_FFFF, arg)


@syscall("fcntl")
def sys_fcntl(k: Kernel, fd: int, cmd: int, arg: int) -> int:
    fd = s32(fd)
    f = k.files[fd]
    cmd = s32(cmd)
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        return k.files.install(f, lowest=arg, cloexec=cmd == F_DUPFD_CLOEXEC)  # unsigned: -7 is EINVAL
    if cmd == F_GETFD:
        return FD_CLOEXEC if k.files.cloexec(fd) else 0
    if cmd == F_SETFD:
        k.files.set_cloexec(fd, bool(arg & FD_CLOEXEC))
        return 0
    if cmd == F_GETFL:
        return _access_mode(f) | f.status_flags
    if cmd == F_SETFL:
        f.status_flags = arg & _SETFL_MASK
        return 0
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
    if s32(oldfd) == s32(newfd) or flags & ~O_CLOEXEC:
        raise KernelError(errno.EINVAL)
    return k.files.install(k.files[s32(oldfd)], s32(newfd), cloexec=bool(flags & O_CLOEXEC))
