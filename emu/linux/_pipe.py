"""Pipes, emulated (never a host pipe): a bounded buffer between two open files.

As fs/pipe.c: a read of an empty pipe waits while a writer is left and then
reads end of file; a write with no reader left fails with ``EPIPE`` (the caller
sends ``SIGPIPE``, :mod:`._sys_io`); a write of at most ``PIPE_BUF`` bytes is
atomic. Waiting goes through the scheduler (:mod:`._wait`): an end raises
:class:`WouldBlock` and the system call waits on the pipe's queue, or fails
with ``EAGAIN`` when the file is ``O_NONBLOCK``.

One difference: a blocking write bigger than the room left writes what fits
and returns that count (Linux waits until all of it is written); callers that
loop on short writes, as the C library and coreutils do, see no difference.
"""

from __future__ import annotations

import errno

from ._files import OpenFile
from ._registry import KernelError
from ._wait import WaitQueue

__all__ = ["Pipe", "PipeReader", "PipeWriter", "WouldBlock", "PIPE_BUF", "PIPE_SIZE"]

PIPE_BUF = 4096          # writes up to this size are atomic (include/uapi/linux/limits.h)
PIPE_SIZE = 65536        # the default capacity (16 pages, fs/pipe.c)
_pipe_ids = iter(range(1, 1 << 62))


class WouldBlock(KernelError):
    """The operation would wait: ``EAGAIN`` for a non-blocking file, else the
    system call waits on ``queue``."""

    def __init__(self, queue: WaitQueue, what: str) -> None:
        super().__init__(errno.EAGAIN)
        self.queue = queue
        self.what = what


class Pipe:
    """The buffer and both ends' counts (``pipe_inode_info``)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.readers = 0
        self.writers = 0
        self.queue = WaitQueue()          # anything changed: data, room, an end closed
        self.ino = next(_pipe_ids)

    def room(self) -> int:
        return PIPE_SIZE - len(self.buf)


class PipeReader(OpenFile):
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.path = f"pipe:[{pipe.ino}]"
        pipe.readers += 1

    def read(self, n: int) -> bytes:
        p = self.pipe
        if not p.buf:
            if not p.writers or not n:
                return b""
            raise WouldBlock(p.queue, "pipe read")
        data = bytes(p.buf[:n])
        del p.buf[:n]
        p.queue.wake_all()
        return data

    def poll_ready(self) -> tuple[bool, bool]:
        return bool(self.pipe.buf) or not self.pipe.writers, False

    def poll_queue(self) -> WaitQueue:
        return self.pipe.queue

    def close(self) -> None:
        self.pipe.readers -= 1
        self.pipe.queue.wake_all()


class PipeWriter(OpenFile):
    writable = True

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.path = f"pipe:[{pipe.ino}]"
        pipe.writers += 1

    def write(self, data: bytes) -> int:
        p = self.pipe
        if not p.readers:
            raise KernelError(errno.EPIPE)
        room = p.room()
        if not data:
            return 0
        if room < len(data) and (len(data) <= PIPE_BUF or not room):
            raise WouldBlock(p.queue, "pipe write")
        n = min(room, len(data))
        p.buf += data[:n]
        p.queue.wake_all()
        return n

    def poll_ready(self) -> tuple[bool, bool]:
        return False, not self.pipe.readers or self.pipe.room() >= PIPE_BUF

    def poll_queue(self) -> WaitQueue:
        return self.pipe.queue

    def close(self) -> None:
        self.pipe.writers -= 1
        self.pipe.queue.wake_all()
