"""``epoll`` (fs/eventpoll.c) over the same readiness as ``poll`` (:mod:`._sys_pipe`).

An epoll instance is an open file holding an interest list: descriptor ->
(events, user data). ``epoll_wait`` reports the ready ones, waiting (on every
watched file's queue, :mod:`._wait`) while none is and the timeout allows.
Readiness is level-triggered; ``EPOLLET`` and ``EPOLLONESHOT`` are accepted,
and a one-shot entry is disarmed once reported, as the kernel does; an
edge-triggered entry is reported while ready (level), which callers that read
until ``EAGAIN``, as edge-triggered code must, do not tell apart. An entry
names the open file it was added with; closing every descriptor of that file
drops it (``eventpoll_release``).
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

from ._files import OpenFile
from ._kernel import Kernel
from ._registry import KernelError, s32, syscall
from ._sys_pipe import _revents, _timespec_ns
from ._wait import WaitQueue, block_on, deadline_after

EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP = 0x1, 0x4, 0x8, 0x10
EPOLLEXCLUSIVE, EPOLLWAKEUP, EPOLLONESHOT, EPOLLET = 1 << 28, 1 << 29, 1 << 30, 1 << 31
EPOLL_CLOEXEC = 0o2000000
_EVENT = struct.Struct("<IQ")            # struct epoll_event is packed on x86-64: 12 bytes
_MAX_EVENTS = (1 << 31) // _EVENT.size


@dataclass
class _Entry:
    file: OpenFile
    events: int
    data: int
    armed: bool = True


class EpollFile(OpenFile):
    path = "anon_inode:[eventpoll]"

    def __init__(self) -> None:
        self.entries: dict[int, _Entry] = {}
        self.queue = WaitQueue()         # an epoll instance inside another one

    def ready(self, k: Kernel) -> list[tuple[int, int, _Entry]]:
        """(fd, revents, entry) of the ready entries, forgetting closed files."""
        out = []
        for fd, entry in list(self.entries.items()):
            if k.files._fds.get(fd) is not entry.file:
                del self.entries[fd]                 # its file was closed (eventpoll_release)
                continue
            if not entry.armed:
                continue
            rev = _revents(entry.file, entry.events | EPOLLERR | EPOLLHUP) & \
                (entry.events | EPOLLERR | EPOLLHUP)
            if rev:
                out.append((fd, rev, entry))
        return out

    def poll_ready(self) -> tuple[bool, bool]:
        return bool(self.entries), False             # conservative: a nested wait re-checks

    def poll_queue(self) -> WaitQueue:
        return self.queue


def _epoll(k: Kernel, epfd: int) -> EpollFile:
    f = k.files[s32(epfd)]
    if not isinstance(f, EpollFile):
        raise KernelError(errno.EINVAL)
    return f


@syscall("epoll_create1")
def sys_epoll_create1(k: Kernel, flags: int) -> int:
    if flags & ~EPOLL_CLOEXEC:
        raise KernelError(errno.EINVAL)
    return k.files.install(EpollFile(), cloexec=bool(flags & EPOLL_CLOEXEC))


@syscall("epoll_create")
def sys_epoll_create(k: Kernel, size: int) -> int:
    if s32(size) <= 0:
        raise KernelError(errno.EINVAL)
    return sys_epoll_create1(k, 0)


@syscall("epoll_ctl")
def sys_epoll_ctl(k: Kernel, epfd: int, op: int, fd: int, event: int) -> int:
    ep = _epoll(k, epfd)
    fd = s32(fd)
    target = k.files[fd]
    if target is ep:
        raise KernelError(errno.EINVAL)
    op = s32(op)
    if op == EPOLL_CTL_DEL:
        if fd not in ep.entries:
            raise KernelError(errno.ENOENT)
        del ep.entries[fd]
        return 0
    if op not in (EPOLL_CTL_ADD, EPOLL_CTL_MOD):
        raise KernelError(errno.EINVAL)
    events, data = _EVENT.unpack(k.read(event, _EVENT.size))
    if op == EPOLL_CTL_ADD:
        if fd in ep.entries and ep.entries[fd].file is target:
            raise KernelError(errno.EEXIST)
        ep.entries[fd] = _Entry(target, events, data)
    else:
        entry = ep.entries.get(fd)
        if entry is None or entry.file is not target:
            raise KernelError(errno.ENOENT)
        entry.events, entry.data, entry.armed = events, data, True
    ep.queue.wake_all()
    return 0


def _wait(k: Kernel, epfd: int, events: int, maxevents: int, timeout_ns: int | None) -> int:
    ep = _epoll(k, epfd)
    maxevents = s32(maxevents)
    if not 0 < maxevents <= _MAX_EVENTS:
        raise KernelError(errno.EINVAL)
    ready = ep.ready(k)[:maxevents]
    if ready:
        out = bytearray()
        for _fd, rev, entry in ready:
            out += _EVENT.pack(rev, entry.data)
            if entry.events & EPOLLONESHOT:
                entry.armed = False
        k.write(events, bytes(out))
        return len(ready)
    if timeout_ns == 0:
        return 0
    queues = [ep.queue] + [q for e in ep.entries.values() if (q := e.file.poll_queue()) is not None]
    block_on(k, "epoll_wait", queues, deadline_after(k, timeout_ns))
    return 0                                          # pragma: no cover - block_on raises


@syscall("epoll_wait")
def sys_epoll_wait(k: Kernel, epfd: int, events: int, maxevents: int, timeout: int) -> int:
    ms = s32(timeout)
    return _wait(k, epfd, events, maxevents, None if ms < 0 else ms * 1_000_000)


@syscall("epoll_pwait")
def sys_epoll_pwait(k: Kernel, epfd: int, events: int, maxevents: int, timeout: int, sigmask: int,
                    sigsetsize: int) -> int:
    return sys_epoll_wait(k, epfd, events, maxevents, timeout)


@syscall("epoll_pwait2")
def sys_epoll_pwait2(k: Kernel, epfd: int, events: int, maxevents: int, timeout: int, sigmask: int,
                     sigsetsize: int) -> int:
    return _wait(k, epfd, events, maxevents, _timespec_ns(k, timeout))
