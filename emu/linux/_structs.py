"""Binary layouts of the x86-64 user ABI structures the syscall layer fills in.

Data only (``arch/x86/include/uapi/asm/stat.h``, ``include/uapi/linux/utsname.h``,
``include/uapi/linux/time_types.h``, ``include/uapi/linux/resource.h``).
"""

from __future__ import annotations

import os
import stat as _stat
import struct

__all__ = ["pack_stat", "pack_statx", "fifo_stat", "fifo_statx", "pack_utsname", "TIMESPEC",
           "TIMEVAL", "RLIMIT", "IOVEC", "UTSNAME", "RLIM_INFINITY"]

# struct stat: dev ino nlink mode uid gid pad rdev size blksize blocks
#              atime atime_ns mtime mtime_ns ctime ctime_ns reserved[3]
STAT = struct.Struct("<QQQIIIiQqqqqqqqqq24x")
# struct statx: mask blksize attributes nlink uid gid mode pad ino size blocks attributes_mask,
# atime btime ctime mtime (sec nsec pad), rdev major minor, dev major minor, mnt_id, spare
STATX = struct.Struct("<IIQIIIHxxQQQQ" + "qIi" * 4 + "IIIIQ" + "104x")
STATX_BASIC_STATS = 0x7FF
TIMESPEC = struct.Struct("<qq")
TIMEVAL = struct.Struct("<qq")
RLIMIT = struct.Struct("<QQ")
IOVEC = struct.Struct("<QQ")
_UTS_FIELD = 65
UTSNAME = ("Linux", "kprobe-emu", "6.1.0-kprobe-emu", "#1 SMP PREEMPT_DYNAMIC kprobe-emu",
           "x86_64", "(none)")

RLIM_INFINITY = (1 << 64) - 1


def pack_stat(st: os.stat_result) -> bytes:
    return STAT.pack(st.st_dev, st.st_ino, st.st_nlink, st.st_mode, st.st_uid, st.st_gid, 0,
                     st.st_rdev, st.st_size, st.st_blksize, st.st_blocks,
                     int(st.st_atime), st.st_atime_ns % 10**9, int(st.st_mtime),
                     st.st_mtime_ns % 10**9, int(st.st_ctime), st.st_ctime_ns % 10**9)


def pack_statx(st: os.stat_result) -> bytes:
    times: list[int] = []
    for ns in (st.st_atime_ns, 0, st.st_ctime_ns, st.st_mtime_ns):
        times += (ns // 10**9, ns % 10**9, 0)
    return STATX.pack(STATX_BASIC_STATS, st.st_blksize, 0, st.st_nlink, st.st_uid, st.st_gid,
                      st.st_mode, st.st_ino, st.st_size, st.st_blocks, 0, *times,
                      os.major(st.st_rdev), os.minor(st.st_rdev),
                      os.major(st.st_dev), os.minor(st.st_dev), 0)


def fifo_statx(uid: int, gid: int) -> bytes:
    return STATX.pack(STATX_BASIC_STATS, 4096, 0, 1, uid, gid, _stat.S_IFIFO | 0o600, 1, 0, 0, 0,
                      *([0] * 12), 0, 0, 0, 0xC, 0)


def fifo_stat(uid: int, gid: int) -> bytes:
    """``struct stat`` of a pipe: what the standard streams look like to the guest."""
    return STAT.pack(0xC, 1, 1, _stat.S_IFIFO | 0o600, uid, gid, 0, 0, 0, 4096, 0,
                     0, 0, 0, 0, 0, 0)


def pack_utsname() -> bytes:
    return b"".join(f.encode().ljust(_UTS_FIELD, b"\0") for f in UTSNAME)
