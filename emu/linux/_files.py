"""Open files of the guest and its file descriptor table.

Three kinds: the standard input (bytes given to ``from_elf``), the standard
output and error (``Machine.stdout``/``stderr``, looked up on each write), and
host files opened through the access policy (:mod:`emu.linux._fs`). Descriptors
share an open file after ``dup`` as in the kernel (``struct file`` refcount).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from .._streams import write_stream
from ._registry import KernelError

__all__ = ["host_call", "OpenFile", "InputFile", "OutputFile", "HostFile", "FdTable"]

SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2
_MAX_FDS = 1024


class OpenFile:
    """Base: every operation the kernel would refuse on this kind of file."""

    path = ""
    writable = False

    def read(self, n: int) -> bytes:
        raise KernelError(errno.EBADF)

    def pread(self, n: int, offset: int) -> bytes:
        raise KernelError(errno.ESPIPE)

    def write(self, data: bytes) -> int:
        raise KernelError(errno.EBADF)

    def lseek(self, offset: int, whence: int) -> int:
        raise KernelError(errno.ESPIPE)

    def host_stat(self) -> os.stat_result | None:
        """The host file's status; ``None``: a pipe (the standard streams)."""
        return None

    def getdents(self) -> list[os.DirEntry[str]]:
        raise KernelError(errno.ENOTDIR)

    def close(self) -> None:
        pass


class InputFile(OpenFile):
    """The guest's standard input: a fixed byte string, then end of file."""

    path = "pipe:[stdin]"

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, n: int) -> bytes:
        chunk = self._data[self._pos:self._pos + n]
        self._pos += len(chunk)
        return chunk


class OutputFile(OpenFile):
    """The guest's standard output or error: whatever stream ``get()`` returns now."""

    writable = True

    def __init__(self, path: str, get: Callable[[], Any]) -> None:
        self.path = path
        self._get = get

    def write(self, data: bytes) -> int:
        write_stream(self._get(), data)
        return len(data)


class HostFile(OpenFile):
    """A host file or directory the policy allowed, open on a host descriptor."""

    def __init__(self, path: str, realpath: str, fd: int, writable: bool) -> None:
        self.path = path
        self.realpath = realpath
        self.fd = fd
        self.writable = writable
        self._dir: list[os.DirEntry[str]] | None = None

    def read(self, n: int) -> bytes:
        return host_call(os.read, self.fd, n)

    def pread(self, n: int, offset: int) -> bytes:
        return host_call(os.pread, self.fd, n, offset)

    def write(self, data: bytes) -> int:
        if not self.writable:
            raise KernelError(errno.EBADF)
        return host_call(os.write, self.fd, data)

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
        os.close(self.fd)


def host_call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a host ``os`` function; its ``OSError`` becomes the guest's ``-errno``."""
    try:
        return fn(*args)
    except OSError as exc:
        raise KernelError(exc.errno or errno.EIO) from None


class FdTable:
    """Descriptor -> open file, lowest free descriptor first (``get_unused_fd_flags``)."""

    def __init__(self) -> None:
        self._fds: dict[int, OpenFile] = {}
        self._refs: dict[int, int] = {}      # id(open file) -> descriptors on it

    def __getitem__(self, fd: int) -> OpenFile:
        f = self._fds.get(fd)
        if f is None:
            raise KernelError(errno.EBADF)
        return f

    def __contains__(self, fd: int) -> bool:
        return fd in self._fds

    def install(self, f: OpenFile, fd: int | None = None, lowest: int = 0) -> int:
        if fd is None:
            fd = lowest
            while fd in self._fds:
                fd += 1
        if fd >= _MAX_FDS:
            raise KernelError(errno.EMFILE)
        if fd in self._fds:
            self.close(fd)
        self._fds[fd] = f
        self._refs[id(f)] = self._refs.get(id(f), 0) + 1
        return fd

    def close(self, fd: int) -> None:
        f = self[fd]
        del self._fds[fd]
        self._refs[id(f)] -= 1
        if not self._refs[id(f)]:
            del self._refs[id(f)]
            f.close()

    def close_all(self) -> None:
        for fd in list(self._fds):
            self.close(fd)
