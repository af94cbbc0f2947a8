"""``/dev`` of the view: the memory devices of ``drivers/char/mem.c`` and
``random.c``, emulated (never the host's).

``null`` reads nothing and takes everything; ``zero`` reads zeros; ``full``
reads zeros and refuses writes with ``ENOSPC``; ``random`` and ``urandom`` read
the process's seeded generator (``Kernel.rng``: the same bytes for the same
seed). ``tty`` is ``ENXIO``: the guest has no controlling terminal
(``tty_open_current_tty``). ``stdin``, ``stdout``, ``stderr`` and ``fd`` are
the symlinks udev makes into ``/proc/self/fd``. ``/dev/shm`` is a tmpfs of the
mount table (:mod:`._memfs`).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING

from ._registry import KernelError
from ._vnode import DT_CHR, DT_LNK, Dirent, Node, StatFs, SymlinkNode, ViewFile, join, make_stat, path_ino

if TYPE_CHECKING:
    from ._kernel import Kernel

__all__ = ["DevMount", "DevNode", "DeviceFile"]

_DEV = 0x5                     # st_dev of the devtmpfs
_TMPFS_MAGIC = 0x01021994
# name -> (major, minor) of include/uapi/linux/major.h and drivers/char/mem.c's devlist
_DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
            "tty": (5, 0)}
_LINKS = {"stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
          "fd": "/proc/self/fd"}


class DevMount:
    def root(self, k: Kernel | None, guest: str) -> Node:
        return DevDir(guest)

    def describe(self) -> tuple[str, str, str]:
        return "udev", "devtmpfs", "rw"


class DevDir(Node):
    def stat(self) -> os.stat_result:
        return make_stat(stat.S_IFDIR | 0o755, path_ino(self.guest), _DEV, nlink=2)

    def mode(self) -> int:
        return stat.S_IFDIR | 0o755

    def lookup(self, name: str) -> Node:
        guest = join(self.guest, name)
        if name in _DEVICES:
            return DevNode(guest, name)
        if name in _LINKS:
            return SymlinkNode(guest, _LINKS[name], _DEV)
        raise KernelError(errno.ENOENT)

    def entries(self) -> list[Dirent]:
        return [*(Dirent(n, path_ino(join(self.guest, n)), DT_CHR) for n in _DEVICES),
                *(Dirent(n, path_ino(join(self.guest, n)), DT_LNK) for n in _LINKS)]

    def statfs(self) -> StatFs:
        return StatFs(_TMPFS_MAGIC, 4096, 0, 0, 0, 0, 0)


class DevNode(Node):
    """A character device; ``st_rdev`` its Linux number."""

    def __init__(self, guest: str, name: str) -> None:
        super().__init__(guest)
        self.name = name

    def stat(self) -> os.stat_result:
        return make_stat(self.mode(), path_ino(self.guest), _DEV, rdev=os.makedev(*_DEVICES[self.name]))

    def mode(self) -> int:
        return stat.S_IFCHR | 0o666

    def open(self, k: Kernel, flags: int) -> ViewFile:
        if self.name == "tty":
            raise KernelError(errno.ENXIO)
        return DeviceFile(self, k)

    def truncate(self, size: int) -> None:
        pass                            # do_truncate of a character device: nothing to cut

    def statfs(self) -> StatFs:
        return StatFs(_TMPFS_MAGIC, 4096, 0, 0, 0, 0, 0)


class DeviceFile(ViewFile):
    """An open memory device."""

    writable = True

    def __init__(self, node: DevNode, k: Kernel) -> None:
        self.node = node
        self.path = node.guest
        self.name = node.name
        self._k = k

    @property
    def mmap_zero(self) -> bool:
        """``mmap_zero``: a mapping of ``/dev/zero`` is anonymous memory."""
        return self.name == "zero"

    def read(self, n: int) -> bytes:
        name = self.name
        if name == "null":
            return b""
        if name in ("random", "urandom"):
            return self._k.rng.randbytes(n)
        return bytes(n)

    def pread(self, n: int, offset: int) -> bytes:
        return self.read(n)

    def write(self, data: bytes) -> int:
        if self.name == "full":
            raise KernelError(errno.ENOSPC)
        return len(data)

    def pwrite(self, data: bytes, offset: int) -> int:
        return self.write(data)

    def lseek(self, offset: int, whence: int) -> int:
        return 0                                # null_lseek: every position is 0

