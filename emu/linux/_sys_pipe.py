"""``pipe``/``pipe2`` (:mod:`._pipe`) and waiting on many files: ``poll``,
``ppoll``, ``select``, ``pselect6`` (fs/select.c).

A file says whether it is ready (``OpenFile.poll_ready``) and which queue tells
of a change (``OpenFile.poll_queue``); files that never block (regular files,
the standard streams) are always ready. With nothing ready the call waits on
every queue, until the timeout (virtual time) if one is given, and runs again
when woken (:mod:`._wait`). The signal mask of ``ppoll``/``pselect6`` is not
applied while waiting (a signal interrupts the wait either way).
"""

from __future__ import annotations

import errno
import struct

from ._files import OpenFile
from ._kernel import Kernel
from ._pipe import Pipe, PipeReader, PipeWriter
from ._registry import KernelError, s32, syscall
from ._wait import WaitQueue, block_on, deadline_after

O_NONBLOCK, O_CLOEXEC, O_DIRECT = 0o4000, 0o2000000, 0o40000
POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
POLLRDNORM, POLLWRNORM = 0x40, 0x100
_POLLFD = struct.Struct("<ihh")
_TIMESPEC = struct.Struct("<qq")
_TIMEVAL = struct.Struct("<qq")
_NS = 1_000_000_000
_FD_SETSIZE = 1024
_MAX_POLLFDS = 1024 * 64


@syscall("pipe2")
def sys_pipe2(k: Kernel, fds: int, flags: int) -> int:
    if flags & ~(O_NONBLOCK | O_CLOEXEC | O_DIRECT):
        raise KernelError(errno.EINVAL)
    pipe = Pipe()
    reader, writer = PipeReader(pipe), PipeWriter(pipe)
    for end in (reader, writer):
        end.status_flags = flags & O_NONBLOCK
    cloexec = bool(flags & O_CLOEXEC)
    rfd = k.files.install(reader, cloexec=cloexec)
    try:
        wfd = k.files.install(writer, cloexec=cloexec)
    except KernelError:
        k.files.close(rfd)
        raise
    try:
        k.write(fds, struct.pack("<ii", rfd, wfd))
    except KernelError:
        k.files.close(rfd)
        k.files.close(wfd)
        raise
    return 0


@syscall("pipe")
def sys_pipe(k: Kernel, fds: int) -> int:
    return sys_pipe2(k, fds, 0)


# --- poll ----------------------------------------------------------------------------------------
def _revents(f: OpenFile | None, events: int) -> int:
    if f is None:
        return POLLNVAL
    readable, writable = f.poll_ready()
    out = 0
    if readable:
        out |= events & (POLLIN | POLLRDNORM)
    if writable:
        out |= events & (POLLOUT | POLLWRNORM)
    if isinstance(f, PipeReader) and not f.pipe.writers:
        out |= POLLHUP
    if isinstance(f, PipeWriter) and not f.pipe.readers:
        out |= POLLERR
    return out


def _wait_or_return(k: Kernel, what: str, files: list[OpenFile], timeout_ns: int | None) -> int:
    """Nothing is ready: return 0 at once (zero timeout) or wait."""
    if timeout_ns == 0:
        return 0
    queues: list[WaitQueue] = [q for f in files if (q := f.poll_queue()) is not None]
    deadline = deadline_after(k, timeout_ns)
    block_on(k, what, queues, deadline)
    return 0                                          # pragma: no cover - block_on raises


def _poll(k: Kernel, fds: int, nfds: int, timeout_ns: int | None) -> int:
    if nfds > _MAX_POLLFDS:
        raise KernelError(errno.EINVAL)
    raw = k.read(fds, nfds * _POLLFD.size) if nfds else b""
    entries = [_POLLFD.unpack_from(raw, i * _POLLFD.size) for i in range(nfds)]
    files: list[OpenFile] = []
    out = bytearray(raw)
    ready = 0
    for i, (fd, events, _rev) in enumerate(entries):
        if fd < 0:
            rev = 0
        else:
            f = k.files._fds.get(fd)
            rev = _revents(f, events | POLLERR | POLLHUP) & (events | POLLERR | POLLHUP | POLLNVAL)
            if f is not None:
                files.append(f)
        struct.pack_into("<h", out, i * _POLLFD.size + 6, rev)
        ready += bool(rev)
    if ready:
        k.write(fds, bytes(out))
        return ready
    if nfds:
        k.write(fds, bytes(out))
    return _wait_or_return(k, "poll", files, timeout_ns)


@syscall("poll")
def sys_poll(k: Kernel, fds: int, nfds: int, timeout: int) -> int:
    ms = s32(timeout)
    return _poll(k, fds, nfds, None if ms < 0 else ms * 1_000_000)


def _timespec_ns(k: Kernel, addr: int) -> int | None:
    if not addr:
        return None
    sec, nsec = _TIMESPEC.unpack(k.read(addr, _TIMESPEC.size))
    if sec < 0 or not 0 <= nsec < _NS:
        raise KernelError(errno.EINVAL)
    return sec * _NS + nsec


@syscall("ppoll")
def sys_ppoll(k: Kernel, fds: int, nfds: int, tsp: int, sigmask: int, sigsetsize: int) -> int:
    return _poll(k, fds, nfds, _timespec_ns(k, tsp))


# --- select ----------------------------------------------------------------------------------------
def _select(k: Kernel, nfds: int, sets: tuple[int, int, int], timeout_ns: int | None) -> int:
    nfds = s32(nfds)
    if not 0 <= nfds <= _FD_SETSIZE:
        raise KernelError(errno.EINVAL)
    size = (nfds + 63) // 64 * 8
    masks = [int.from_bytes(k.read(a, size), "little") if a and size else 0 for a in sets]
    results = [0, 0, 0]
    files: list[OpenFile] = []
    for fd in range(nfds):
        bit = 1 << fd
        if not (masks[0] | masks[1] | masks[2]) & bit:
            continue
        f = k.files._fds.get(fd)
        if f is None:
            raise KernelError(errno.EBADF)
        files.append(f)
        readable, writable = f.poll_ready()
        if masks[0] & bit and readable:
            results[0] |= bit
        if masks[1] & bit and writable:
            results[1] |= bit
    ready = sum(bin(r).count("1") for r in results)
    if ready or timeout_ns == 0:
        for addr, value in zip(sets, results, strict=True):
            if addr and size:
                k.write(addr, value.to_bytes(size, "little"))
        return ready
    return _wait_or_return(k, "select", files, timeout_ns)


@syscall("select")
def sys_select(k: Kernel, nfds: int, rfds: int, wfds: int, efds: int, tvp: int) -> int:
    timeout = None
    if tvp:
        sec, usec = _TIMEVAL.unpack(k.read(tvp, _TIMEVAL.size))
        if sec < 0 or not 0 <= usec < 1_000_000:
            raise KernelError(errno.EINVAL)
        timeout = sec * _NS + usec * 1000
    return _select(k, nfds, (rfds, wfds, efds), timeout)


@syscall("pselect6")
def sys_pselect6(k: Kernel, nfds: int, rfds: int, wfds: int, efds: int, tsp: int, sig: int) -> int:
    return _select(k, nfds, (rfds, wfds, efds), _timespec_ns(k, tsp))
