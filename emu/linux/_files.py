"""Open files of the guest and its file descriptor table.

Three kinds: the standard input (bytes given to ``from_elf``, or a host binary
stream read only when and as much as the guest reads), the standard output and
error (``Machine.stdout``/``stderr``, looked up on each write; a closed or full
stream is ``EBADF``/``ENOSPC`` for the guest), and host files opened through the
access policy (:mod:`emu.linux._fs`). Descriptors share an open file after
``dup`` as in the kernel (``struct file`` refcount).

Host descriptors: each :class:`HostFile` owns its descriptor through a
``weakref.finalize``, so it is closed by ``close`` (the guest's, the process's
exit, ``Machine.close``) or, at the latest, when the file object is collected
with its machine. No path leaks a host descriptor.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import weakref
from collections.abc import Callable
from typing import IO, Any

from .._streams import HostStream, write_stream
from ._registry import KernelError

__all__ = ["host_call", "OpenFile", "InputFile", "OutputFile", "HostFile", "FdTable", "MAX_FDS",
           "Stdin"]

SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2
MAX_FDS = 1024                  # RLIMIT_NOFILE of a fresh shell: descriptors are 0..1023

# What the guest's standard input reads: fixed bytes, or a binary stream.
Stdin = bytes | bytearray | memoryview | IO[bytes]


class OpenFile:
    """Base: every operation the kernel would refuse on this kind of file."""

    path = ""
    writable = False
    # Descriptors on this open file in every process's table (``struct file``'s
    # count): the file is closed when the last one goes.
    fd_refs = 0
    # O_NONBLOCK, O_APPEND as F_SETFL set them (``f_flags``).
    status_flags = 0

    def poll_ready(self) -> tuple[bool, bool]:
        """(readable, writable) without blocking, for ``poll``/``select``."""
        return True, self.writable

    def poll_queue(self) -> Any:
        """The :class:`~emu.linux._wait.WaitQueue` a poller waits on for this file
        to change, or None when it never blocks."""
        return None

    def read(self, n: int) -> bytes:
        raise KernelError(errno.EBADF)

    def pread(self, n: int, offset: int) -> bytes:
        raise KernelError(errno.ESPIPE)

    def write(self, data: bytes) -> int:
        raise KernelError(errno.EBADF)

    def pwrite(self, data: bytes, offset: int) -> int:
        raise KernelError(errno.ESPIPE)

    def lseek(self, offset: int, whence: int) -> int:
        raise KernelError(errno.ESPIPE)

    @property
    def regular(self) -> bool:
        """A regular file: a read returns all it is asked for, up to the end of file."""
        return False

    def host_stat(self) -> os.stat_result | None:
        """The host file's status; ``None``: a pipe (the standard streams)."""
        return None

    def getdents(self) -> list[os.DirEntry[str]]:
        raise KernelError(errno.ENOTDIR)

    def close(self) -> None:
        pass


def _terminal_fd(stream: Any) -> int | None:
    """The host descriptor of ``stream`` when it is a terminal, else None (a
    ``BytesIO``, a file, a pipe, pytest's capture, a closed stream)."""
    if isinstance(stream, HostStream):
        stream = getattr(sys, stream.name, None)
    try:
        fd = stream.fileno()
        return fd if isinstance(fd, int) and os.isatty(fd) else None
    except (AttributeError, OSError, ValueError):
        return None


class InputFile(OpenFile):
    """The guest's standard input: a fixed byte string then end of file, or a host
    binary stream, read when the guest reads and no more than it asks (one
    ``read1``, or one ``read`` of a raw stream: what is there, waiting only
    while nothing is). It is a pipe to the guest, or a terminal when the host
    stream is one (``fstat``: ``S_IFCHR``; ``TCGETS`` succeeds)."""

    path = "pipe:[stdin]"

    def __init__(self, source: Stdin) -> None:
        self._stream: IO[bytes] | None = None
        self._data = b""
        if isinstance(source, bytes | bytearray | memoryview):
            self._data = bytes(source)
        else:
            self._stream = source
        self._pos = 0

    def read(self, n: int) -> bytes:
        if self._stream is None:
            chunk = self._data[self._pos:self._pos + n]
            self._pos += len(chunk)
            return chunk
        read = getattr(self._stream, "read1", None) or self._stream.read
        try:
            data = read(n)
        except OSError as exc:
            raise KernelError(exc.errno or errno.EIO) from None
        except ValueError:                  # the stream was closed
            raise KernelError(errno.EBADF) from None
        if data is None:                    # a non-blocking raw stream with nothing ready
            raise KernelError(errno.EAGAIN)
        return data.encode() if isinstance(data, str) else bytes(data)

    def terminal(self) -> int | None:
        """The host terminal's descriptor, or None: not a terminal."""
        return None if self._stream is None else _terminal_fd(self._stream)

    def available(self) -> int:
        """Bytes a read returns without waiting (``FIONREAD``): known for fixed bytes."""
        return len(self._data) - self._pos if self._stream is None else 0

    def host_stat(self) -> os.stat_result | None:
        fd = self.terminal()
        return None if fd is None else host_call(os.fstat, fd)


class OutputFile(OpenFile):
    """The guest's standard output or error: whatever stream ``get()`` returns now.
    A pipe to the guest, or a terminal while that stream is the host's terminal."""

    writable = True

    def __init__(self, path: str, get: Callable[[], Any]) -> None:
        self.path = path
        self._get = get

    def write(self, data: bytes) -> int:
        stream = self._get()
        if stream is None or (isinstance(stream, HostStream) and getattr(sys, stream.name) is None):
            raise KernelError(errno.EBADF)          # e.g. the host's stdout closed (>&-)
        try:
            write_stream(stream, data)
        except OSError as exc:                      # /dev/full: ENOSPC, a closed pipe: EPIPE
            raise KernelError(exc.errno or errno.EIO) from None
        except UnicodeError:
            raise KernelError(errno.EIO) from None
        except ValueError:                          # the stream was closed
            raise KernelError(errno.EBADF) from None
        return len(data)

    def terminal(self) -> int | None:
        """The host terminal's descriptor, or None: not a terminal."""
        return _terminal_fd(self._get())

    def host_stat(self) -> os.stat_result | None:
        fd = self.terminal()
        return None if fd is None else host_call(os.fstat, fd)


class HostFile(OpenFile):
    """A host file or directory the policy allowed, open on a host descriptor."""

    def __init__(self, path: str, realpath: str, fd: int, writable: bool) -> None:
        self.path = path
        self.realpath = realpath
        self.fd = fd
        self.writable = writable
        self._dir: list[os.DirEntry[str]] | None = None
        self._regular: bool | None = None
        # Owns the host descriptor: runs once, at close() or when collected.
        self._closer = weakref.finalize(self, _close_fd, fd)

    @property
    def regular(self) -> bool:
        if self._regular is None:
            try:
                self._regular = stat.S_ISREG(os.fstat(self.fd).st_mode)
            except OSError:
                self._regular = False
        return self._regular

    def read(self, n: int) -> bytes:
        return host_call(os.read, self.fd, n)

    def pread(self, n: int, offset: int) -> bytes:
        return host_call(os.pread, self.fd, n, offset)

    def write(self, data: bytes) -> int:
        if not self.writable:
            raise KernelError(errno.EBADF)
        return host_call(os.write, self.fd, data)

    def pwrite(self, data: bytes, offset: int) -> int:
        if not self.writable:
            raise KernelError(errno.EBADF)
        return host_call(os.pwrite, self.fd, data, offset)

    def lseek(self, offset: int, whence: int) -> int:
        return host_call(os.lseek, self.fd, offset, whence)

    def host_stat(self) -> os.stat_result:
        return host_call(os.fstat, self.fd)

    def getdents(self) -> list[os.DirEntry[str]]:
        """The directory's entries not yet returned (the position is our own)."""
        if self._dir is None:
            self._dir = list(host_call(os.scandir, self.realpath))
        return self._dir

    def close(self) -> None:
        self._closer()


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:                 # pragma: no cover - already closed
        pass


def host_call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a host ``os`` function; its ``OSError`` becomes the guest's ``-errno``."""
    try:
        return fn(*args)
    except OSError as exc:
        raise KernelError(exc.errno or errno.EIO) from None


class FdTable:
    """Descriptor -> open file, lowest free descriptor first (``get_unused_fd_flags``),
    and the descriptors marked close-on-exec (``FD_CLOEXEC``)."""

    def __init__(self) -> None:
        self._fds: dict[int, OpenFile] = {}
        self._cloexec: set[int] = set()

    def __getitem__(self, fd: int) -> OpenFile:
        f = self._fds.get(fd)
        if f is None:
            raise KernelError(errno.EBADF)
        return f

    def __contains__(self, fd: int) -> bool:
        return fd in self._fds

    def items(self) -> list[tuple[int, OpenFile]]:
        """``(fd, open file)`` in descriptor order."""
        return sorted(self._fds.items())

    def install(self, f: OpenFile, fd: int | None = None, lowest: int = 0, *,
                cloexec: bool = False) -> int:
        """Give ``f`` the descriptor ``fd`` (closing what was there, ``dup2``) or the
        lowest free one from ``lowest``. A file no descriptor holds is closed when
        this fails.

        Raises:
            KernelError: ``EBADF`` for an ``fd`` out of range (``dup2``), ``EINVAL``
                for a ``lowest`` out of range (``F_DUPFD``), ``EMFILE`` when full.
        """
        code = 0
        if fd is None:
            if not 0 <= lowest < MAX_FDS:
                code = errno.EINVAL
            else:
                fd = lowest
                while fd in self._fds:
                    fd += 1
                if fd >= MAX_FDS:
                    code = errno.EMFILE
        elif not 0 <= fd < MAX_FDS:
            code = errno.EBADF
        if code:
            if not f.fd_refs:
                f.close()
            raise KernelError(code)
        assert fd is not None
        f.fd_refs += 1                  # before closing what was there: it may be f itself
        if fd in self._fds:
            self.close(fd)
        self._fds[fd] = f
        self.set_cloexec(fd, cloexec)
        return fd

    def cloexec(self, fd: int) -> bool:
        self[fd]
        return fd in self._cloexec

    def set_cloexec(self, fd: int, on: bool) -> None:
        if on:
            self._cloexec.add(fd)
        else:
            self._cloexec.discard(fd)

    def close(self, fd: int) -> None:
        f = self[fd]
        del self._fds[fd]
        self._cloexec.discard(fd)
        f.fd_refs -= 1
        if not f.fd_refs:
            f.close()

    def close_all(self) -> None:
        for fd in list(self._fds):
            self.close(fd)

    def fork(self) -> FdTable:
        """A copy for a child process: the same open files (``dup_fd``)."""
        new = FdTable()
        new._fds = dict(self._fds)
        new._cloexec = set(self._cloexec)
        for f in new._fds.values():
            f.fd_refs += 1
        return new

    def close_on_exec(self) -> None:
        """``execve`` closes the descriptors marked ``FD_CLOEXEC`` (``do_close_on_exec``)."""
        for fd in sorted(self._cloexec):
            if fd in self._fds:
                self.close(fd)
