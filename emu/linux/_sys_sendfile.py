"""In-kernel copies between descriptors: ``sendfile`` and ``copy_file_range``.

Both move data :data:`COPY_CHUNK` bytes at a time through the host, so a count
of gigabytes never becomes a host buffer of gigabytes; at most ``MAX_RW_COUNT``
bytes a call, as ``rw_verify_area`` caps it. They work on any kind of open file
through its ``read``/``pread``/``write``/``pwrite``/``lseek``.

Rules from ``fs/read_write.c``:

- ``sendfile`` (``do_sendfile``, ``SYSCALL_DEFINE4(sendfile64)``): reads at
  ``*offset`` when one is given (the input must allow ``pread``, else
  ``ESPIPE``) and writes the offset back, leaving the input's position alone;
  without one it reads at the input's position and moves it. A negative offset
  is ``EINVAL``. A stream input (a pipe, the standard input) gets one read, which
  returns what is there.
- ``copy_file_range`` (``SYSCALL_DEFINE6(copy_file_range)``,
  ``generic_file_rw_checks``, ``generic_copy_file_checks``): ``flags`` must be
  0; both files must be regular (a directory is ``EISDIR``, anything else
  ``EINVAL``); the output must be writable and not ``O_APPEND`` (``EBADF``); the copy stops at the
  input's end; overlapping ranges of one file are ``EINVAL``. Each offset
  pointer, or else each file's position, is moved on by what was copied.

Once some bytes have moved, an error ends the copy and the count is returned,
as for a short ``read``. A pipe end that would wait (:class:`._pipe.WouldBlock`)
before anything moved makes the call wait and run again, or fail with
``EAGAIN`` when that file is ``O_NONBLOCK``.
"""

from __future__ import annotations

import errno
import stat
import struct

from ._files import OpenFile
from ._kernel import Kernel
from ._registry import KernelError, s32, syscall
from ._sys_io import waiting

MAX_RW_COUNT = 0x7FFF_F000          # INT_MAX & PAGE_MASK (include/linux/fs.h)
COPY_CHUNK = 1 << 20                # host bytes per step of a copy
SEEK_SET, SEEK_CUR = 0, 1
_LOFF = struct.Struct("<q")
_LOFF_MAX = (1 << 63) - 1


def _read_loff(k: Kernel, addr: int) -> int:
    return int(_LOFF.unpack(k.read(addr, _LOFF.size))[0])


def _copy(src: OpenFile, dst: OpenFile, count: int, pos_in: int | None,
          pos_out: int | None) -> int:
    """Copy up to ``count`` bytes: ``pread`` at ``pos_in`` (or one ``read`` of a
    stream when None), ``pwrite`` at ``pos_out`` (or ``write`` when None)."""
    done = 0
    while done < count:
        want = min(COPY_CHUNK, count - done)
        try:
            data = src.read(want) if pos_in is None else src.pread(want, pos_in + done)
            if not data:
                break
            n = dst.write(data) if pos_out is None else dst.pwrite(data, pos_out + done)
        except KernelError:
            if done:
                break
            raise
        done += n
        if n < len(data) or len(data) < want or pos_in is None:
            break
    return done


@syscall("sendfile")
def sys_sendfile(k: Kernel, out_fd: int, in_fd: int, offset: int, count: int) -> int:
    pos = _read_loff(k, offset) if offset else None
    src = k.files[s32(in_fd)]
    if pos is not None and not src.regular:
        raise KernelError(errno.ESPIPE)
    start = pos if pos is not None else (src.lseek(0, SEEK_CUR) if src.regular else None)
    if start is not None and start < 0:
        raise KernelError(errno.EINVAL)
    dst = k.files[s32(out_fd)]
    if not dst.writable:
        raise KernelError(errno.EBADF)
    count = min(count, MAX_RW_COUNT)
    if start is not None:
        count = min(count, _LOFF_MAX - start)
    done = waiting(k, lambda: _copy(src, dst, count, start, None), src, dst)
    if start is not None:
        if pos is not None:
            k.write(offset, _LOFF.pack(start + done))
        else:
            src.lseek(start + done, SEEK_SET)
    return done


def _check_regular(f: OpenFile) -> int:
    """``generic_file_rw_checks``: the file's size; a directory is ``EISDIR``,
    anything but a regular file ``EINVAL``."""
    st = f.host_stat()
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise KernelError(errno.EISDIR)
    if st is None or not stat.S_ISREG(st.st_mode):
        raise KernelError(errno.EINVAL)
    return int(st.st_size)


@syscall("copy_file_range")
def sys_copy_file_range(k: Kernel, fd_in: int, off_in: int, fd_out: int, off_out: int,
                        length: int, flags: int) -> int:
    if flags & 0xFFFF_FFFF:
        raise KernelError(errno.EINVAL)
    src = k.files[s32(fd_in)]
    dst = k.files[s32(fd_out)]
    ptr_in = _read_loff(k, off_in) if off_in else None
    ptr_out = _read_loff(k, off_out) if off_out else None
    size_in = _check_regular(src)
    _check_regular(dst)
    pos_in = ptr_in if ptr_in is not None else src.lseek(0, SEEK_CUR)
    pos_out = ptr_out if ptr_out is not None else dst.lseek(0, SEEK_CUR)
    if not dst.writable:
        raise KernelError(errno.EBADF)
    if pos_in < 0 or pos_out < 0:
        raise KernelError(errno.EINVAL)
    count = min(length, MAX_RW_COUNT)
    if count > _LOFF_MAX - pos_in or count > _LOFF_MAX - pos_out:
        raise KernelError(errno.EOVERFLOW)
    count = max(0, min(count, size_in - pos_in))
    if _same_inode(src, dst) and pos_out + count > pos_in and pos_out < pos_in + count:
        raise KernelError(errno.EINVAL)
    done = _copy(src, dst, count, pos_in, pos_out)
    if done:
        for ptr, f, pos in ((off_in, src, pos_in), (off_out, dst, pos_out)):
            if ptr:
                k.write(ptr, _LOFF.pack(pos + done))
            else:
                f.lseek(pos + done, SEEK_SET)
    return done


def _same_inode(a: OpenFile, b: OpenFile) -> bool:
    sa, sb = a.host_stat(), b.host_stat()
    return sa is not None and sb is not None and (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
