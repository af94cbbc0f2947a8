"""Host directories in the view: a :class:`HostMount` maps a host tree (judged
by its real path) at a guest path, read-only or writable.

Lookups go one component at a time with ``lstat`` (``fs/namei.c``:
``walk_component``); a host symlink is never followed by the host but handed
back to the walk (:mod:`._fs`), which resolves its text in the guest's
namespace. So the host path of every node is a real path without symlinks,
and neither a symlink nor ``..`` can lead the guest out of the view.

Host fifos, sockets and devices under a mount are refused (a denial): opening
one could block the emulator or reach hardware. ``chown`` is no operation here
(the guest is one unprivileged user); see :mod:`._sys_fsops`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._files import HostFile, host_call
from ._registry import KernelError
from ._vnode import ACC_W, O_ACCMODE, O_RDONLY, Denied, Dirent, Node, StatFs, dtype_of, join

if TYPE_CHECKING:
    from ._kernel import Kernel

__all__ = ["HostMount", "HostNode", "ViewHostFile", "is_secret"]

O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o100, 0o200, 0o1000, 0o2000
_PASSED = O_ACCMODE | O_TRUNC | O_APPEND
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
ST_RDONLY = 1
_AT_FDCWD = -100

# Secrets of /etc that the system view never shows, by host real path.
_SECRET_PATHS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/ssh",
                 "/etc/sudoers", "/etc/sudoers.d", "/etc/ssl/private", "/etc/security/opasswd")
_SECRET_SUFFIXES = (".key",)

_libc = ctypes.CDLL(None, use_errno=True)


def is_secret(real: str) -> bool:
    """``real`` is, or is under, a secret of ``/etc`` (shadow files, SSH and TLS
    private keys, sudoers)."""
    if any(real == s or real.startswith(s + "/") for s in _SECRET_PATHS):
        return True
    return real.startswith("/etc/") and real.endswith(_SECRET_SUFFIXES)


class HostMount:
    """A host file or directory tree at ``guest``.

    Attributes:
        host: its real path.
        writable: the guest may create, change and remove files in it.
        hide: host real paths the guest must not see (``is_secret``), or ``None``.
    """

    def __init__(self, guest: str, host: str, writable: bool,
                 hide: Callable[[str], bool] | None = None) -> None:
        self.guest = guest
        self.host = host
        self.writable = writable
        self.hide = hide

    def __repr__(self) -> str:
        return f"HostMount({self.host!r} at {self.guest!r}, {'rw' if self.writable else 'ro'})"

    def root(self, k: Kernel | None, guest: str) -> Node:
        return HostNode(self, guest, self.host, host_call(os.lstat, self.host))

    def covers(self, real: str) -> bool:
        return real == self.host or real.startswith(self.host.rstrip("/") + "/")

    def describe(self) -> tuple[str, str, str]:
        return self.host, "hostfs", "rw" if self.writable else "ro"


class HostNode(Node):
    """A name under a :class:`HostMount`; ``host`` is its path on the host."""

    def __init__(self, mount: HostMount, guest: str, host: str, st: os.stat_result) -> None:
        super().__init__(guest)
        self.mount = mount
        self.fs = mount
        self.writable = mount.writable
        self.host = host
        self._mode = st.st_mode

    def mode(self) -> int:
        return self._mode

    def stat(self) -> os.stat_result:
        st: os.stat_result = host_call(os.lstat, self.host)
        self._mode = st.st_mode
        return st

    def readlink(self) -> str:
        if not stat.S_ISLNK(self._mode):
            raise KernelError(errno.EINVAL)
        return str(host_call(os.readlink, self.host))

    def access(self, k: Kernel | None, want: int) -> bool:
        if want & ACC_W and not self.writable:
            return False
        return os.access(self.host, want, follow_symlinks=False)

    def _hidden(self, host: str) -> bool:
        return self.mount.hide is not None and self.mount.hide(host)

    def _write_check(self, name: str = "") -> None:
        if not self.writable:
            raise Denied(join(self.guest, name) if name else self.guest,
                         join(self.host, name) if name else self.host)

    # --- a directory ------------------------------------------------------------------
    def lookup(self, name: str) -> Node:
        if not stat.S_ISDIR(self._mode):
            raise KernelError(errno.ENOTDIR)
        host = join(self.host, name)
        if self._hidden(host):
            raise Denied(join(self.guest, name), host)
        return HostNode(self.mount, join(self.guest, name), host, host_call(os.lstat, host))

    def entries(self) -> list[Dirent]:
        out = []
        with host_call(os.scandir, self.host) as it:
            for e in it:
                if self._hidden(e.path):
                    continue
                try:
                    mode = e.stat(follow_symlinks=False).st_mode
                except OSError:
                    continue
                out.append(Dirent(e.name, e.inode(), dtype_of(mode)))
        return out

    def create(self, k: Kernel, name: str, flags: int, mode: int) -> HostFile:
        self._write_check(name)
        host = join(self.host, name)
        fd = host_call(os.open, host, (flags & _PASSED) | O_CREAT | O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                       mode & 0o7777 & ~k.umask)
        node = HostNode(self.mount, join(self.guest, name), host, os.fstat(fd))
        return ViewHostFile(node, fd, flags)

    def mkdir(self, k: Kernel, name: str, mode: int) -> None:
        self._write_check(name)
        host_call(os.mkdir, join(self.host, name), mode & 0o7777 & ~k.umask)

    def symlink(self, k: Kernel, name: str, target: str) -> None:
        self._write_check(name)
        host_call(os.symlink, target, join(self.host, name))

    def link(self, k: Kernel, old: Node, name: str) -> None:
        self._write_check(name)
        assert isinstance(old, HostNode)
        new = join(self.host, name)
        host_call(lambda: os.link(old.host, new, follow_symlinks=False))

    def unlink(self, name: str, *, rmdir: bool = False) -> None:
        self._write_check(name)
        host = join(self.host, name)
        if self._hidden(host):
            raise Denied(join(self.guest, name), host)
        host_call(os.rmdir if rmdir else os.unlink, host)

    def rename(self, name: str, newdir: Node, newname: str, flags: int) -> None:
        assert isinstance(newdir, HostNode)
        self._write_check(name)
        newdir._write_check(newname)
        old, new = join(self.host, name), join(newdir.host, newname)
        if self._hidden(old) or newdir._hidden(new):
            raise Denied(join(self.guest, name), old)
        if not flags:
            host_call(os.rename, old, new)
        elif _libc.renameat2(_AT_FDCWD, os.fsencode(old), _AT_FDCWD, os.fsencode(new), flags) != 0:
            raise KernelError(ctypes.get_errno() or errno.EINVAL)

    # --- the file itself ----------------------------------------------------------------
    def open(self, k: Kernel, flags: int) -> HostFile:
        """A regular file (the view opens directories itself)."""
        if not stat.S_ISREG(self.stat().st_mode):
            raise Denied(self.guest, self.host)
        if flags & O_ACCMODE != O_RDONLY or flags & O_TRUNC:
            self._write_check()
        fd = host_call(os.open, self.host, (flags & _PASSED) | os.O_CLOEXEC | os.O_NOFOLLOW)
        return ViewHostFile(self, fd, flags)

    def chmod(self, mode: int) -> None:
        self._write_check()
        if not stat.S_ISLNK(self._mode):
            host_call(os.chmod, self.host, mode & 0o7777)

    def utimens(self, atime: int | None, mtime: int | None) -> None:
        self._write_check()
        st = self.stat()
        ns = (st.st_atime_ns if atime is None else atime, st.st_mtime_ns if mtime is None else mtime)
        host_call(lambda: os.utime(self.host, ns=ns, follow_symlinks=False))

    def truncate(self, size: int) -> None:
        self._write_check()
        if stat.S_ISDIR(self._mode):
            raise KernelError(errno.EISDIR)
        host_call(os.truncate, self.host, size)

    def statfs(self) -> StatFs:
        v = host_call(os.statvfs, self.host)
        flags = v.f_flag | (0 if self.writable else ST_RDONLY)
        return StatFs(_fs_type(self.host), v.f_bsize, v.f_blocks, v.f_bfree, v.f_bavail, v.f_files,
                      v.f_ffree, v.f_namemax, v.f_frsize, flags)


class ViewHostFile(HostFile):
    """A host file opened through the view (``path`` is the guest's absolute path)."""

    def __init__(self, node: HostNode, fd: int, flags: int) -> None:
        super().__init__(node.guest, node.host, fd, (flags & O_ACCMODE) != O_RDONLY)
        self.node = node
        self.flags = flags


def _fs_type(path: str) -> int:
    """``f_type`` of the host file system holding ``path`` (``statfs(2)``)."""
    buf = ctypes.create_string_buffer(120)
    if _libc.statfs(os.fsencode(path), buf) != 0:
        return 0xEF53                   # EXT4_SUPER_MAGIC
    return int.from_bytes(buf.raw[:8], "little")
