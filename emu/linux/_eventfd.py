"""``eventfd``: a 64-bit counter behind a descriptor (``fs/eventfd.c``).

A write adds its 8-byte value to the counter; a read returns the counter and
resets it to 0, or with ``EFD_SEMAPHORE`` returns 1 and takes 1 off. A read of
a zero counter blocks, and so does a write that would take the counter to
``ULLONG_MAX`` or past it (``eventfd_read``, ``eventfd_write``); with
``EFD_NONBLOCK`` (``O_NONBLOCK`` in the file's status flags, which ``fcntl``
may change) either is ``EAGAIN`` instead. Blocking goes through the scheduler
as for a pipe: the file raises :class:`._pipe.WouldBlock` and the system call
waits on the file's queue (:func:`._wait.block_on`), runs again when the
counter changes, and simply looks again. A read of fewer than 8 bytes, a write of
other than 8 (Linux 6.9 on: "eventfd: strictly check the count parameter on
eventfd_write"), or of the value ``ULLONG_MAX``, is ``EINVAL``.

``poll`` sees the file through :meth:`EventFd.poll_ready` (readable while the
counter is non-zero, writable while it is below ``ULLONG_MAX - 1``, as
``eventfd_poll``) and waits on :meth:`EventFd.poll_queue`.
"""

from __future__ import annotations

import errno
import os
import stat

from ._files import OpenFile
from ._kernel import Kernel
from ._pipe import WouldBlock
from ._registry import KernelError, syscall
from ._wait import WaitQueue

__all__ = ["EventFd", "EFD_SEMAPHORE", "EFD_NONBLOCK", "EFD_CLOEXEC"]

# include/uapi/linux/eventfd.h
EFD_SEMAPHORE = 1
EFD_NONBLOCK = 0o4000              # O_NONBLOCK
EFD_CLOEXEC = 0o2000000            # O_CLOEXEC
_ULLONG_MAX = (1 << 64) - 1
# The inode every anonymous file shares (fs/anon_inodes.c): mode 0600 with no
# file type bits, on the anon_inodefs superblock.
_ANON_INODE_DEV, _ANON_INODE_INO = 0xE, 1


class EventFd(OpenFile):
    """One eventfd object; descriptors (``dup``) and processes share it.

    Attributes:
        count: the counter.
        semaphore: ``EFD_SEMAPHORE``.
    """

    path = "anon_inode:[eventfd]"
    writable = True

    def __init__(self, count: int, flags: int, uid: int, gid: int) -> None:
        self.count = count
        self.semaphore = bool(flags & EFD_SEMAPHORE)
        self.status_flags = flags & EFD_NONBLOCK
        self._queue = WaitQueue()           # readers and writers (the kernel's ctx->wqh)
        self._uid, self._gid = uid, gid

    def read(self, n: int) -> bytes:
        if n < 8:
            raise KernelError(errno.EINVAL)
        if not self.count:
            raise WouldBlock(self._queue, "eventfd read")
        value = 1 if self.semaphore else self.count
        self.count -= value
        self._queue.wake_all()              # a writer may fit now
        return value.to_bytes(8, "little")

    def write(self, data: bytes) -> int:
        if len(data) != 8:
            raise KernelError(errno.EINVAL)
        value = int.from_bytes(data[:8], "little")
        if value == _ULLONG_MAX:
            raise KernelError(errno.EINVAL)
        if _ULLONG_MAX - self.count <= value:
            raise WouldBlock(self._queue, "eventfd write")
        self.count += value
        if value:
            self._queue.wake_all()
        return 8

    def poll_ready(self) -> tuple[bool, bool]:
        """(readable, writable) now: ``EPOLLIN`` and ``EPOLLOUT`` of ``eventfd_poll``."""
        return self.count > 0, self.count < _ULLONG_MAX - 1

    def poll_queue(self) -> WaitQueue:
        """Woken whenever the counter changes."""
        return self._queue

    def host_stat(self) -> os.stat_result:
        """The anonymous inode's status (no host file behind it)."""
        return os.stat_result(
            (stat.S_IRUSR | stat.S_IWUSR, _ANON_INODE_INO, _ANON_INODE_DEV, 1, self._uid, self._gid,
             0, 0, 0, 0),
            {"st_rdev": 0, "st_blksize": 4096, "st_blocks": 0,
             "st_atime_ns": 0, "st_mtime_ns": 0, "st_ctime_ns": 0})


@syscall("eventfd2")
def sys_eventfd2(k: Kernel, initval: int, flags: int) -> int:
    """An unknown flag is ``EINVAL``; ``initval`` is an ``unsigned int``."""
    flags &= 0xFFFF_FFFF
    if flags & ~(EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC):
        raise KernelError(errno.EINVAL)
    f = EventFd(initval & 0xFFFF_FFFF, flags, k.uid, k.gid)
    return k.files.install(f, cloexec=bool(flags & EFD_CLOEXEC))


@syscall("eventfd")
def sys_eventfd(k: Kernel, initval: int) -> int:
    return sys_eventfd2(k, initval, 0)
