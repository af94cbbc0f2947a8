"""The arguments path system calls share: ``dirfd`` + path (``AT_*`` flags,
``fs/namei.c``: ``path_init``), and the reporting of the view's refusals.

A ``dirfd`` is ignored for an absolute path; otherwise it must be a directory
the view opened (``ENOTDIR`` for a pipe, a regular file, a descriptor the view
did not open). A refusal of the view (:class:`._vnode.Denied`) is ``EACCES``
to the guest and reported once per path (``Kernel.deny``).
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable

from ._kernel import Kernel
from ._registry import Handler, KernelError, s32, syscall
from ._vnode import Denied, Node

__all__ = ["path_syscall", "dir_base", "fd_node", "at_node", "AT_FDCWD", "AT_EMPTY_PATH",
           "AT_SYMLINK_NOFOLLOW", "AT_SYMLINK_FOLLOW", "AT_REMOVEDIR", "AT_EACCESS",
           "AT_NO_AUTOMOUNT", "AT_STATX_SYNC_TYPE"]

# include/uapi/linux/fcntl.h
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_EACCESS, AT_SYMLINK_FOLLOW = 0x100, 0x200, 0x200, 0x400
AT_NO_AUTOMOUNT, AT_EMPTY_PATH = 0x800, 0x1000
AT_STATX_SYNC_TYPE = 0x6000


# Calls that only look at a path (its status, access, link target): a refusal is
# EACCES to the guest as for any other, but only noted (-v), not counted as a
# denied access in the summary: shells stat $OLDPWD and every directory of $PATH.
LOOKUPS = frozenset({"newfstatat", "statx", "stat", "lstat", "faccessat2", "faccessat", "access",
                     "readlinkat", "readlink"})


def path_syscall(*names: str) -> Callable[[Handler], Handler]:
    """``@syscall`` for handlers that walk paths: a refusal of the view is
    reported (``Kernel.deny``; a lookup only noted, see :data:`LOOKUPS`) and the
    guest gets ``EACCES``."""
    counted = not set(names) <= LOOKUPS

    def register(fn: Handler) -> Handler:
        @functools.wraps(fn)
        def handler(k: Kernel, *args: int) -> int:
            try:
                return fn(k, *args)
            except Denied as exc:
                k.deny(exc.guest, counted=counted)
                raise KernelError(errno.EACCES) from None
        return syscall(*names)(handler)
    return register


def dir_base(k: Kernel, dirfd: int, path: str) -> Node | None:
    """Where a relative ``path`` starts: ``None`` for the working directory."""
    dirfd = s32(dirfd)
    if path.startswith("/") or dirfd == AT_FDCWD:
        return None
    node = fd_node(k, dirfd)
    if not node.is_dir():
        raise KernelError(errno.ENOTDIR)
    return node


def fd_node(k: Kernel, fd: int) -> Node:
    """The view's node of an open file (``ENOTDIR`` for one it did not open)."""
    node = getattr(k.files[s32(fd)], "node", None)
    if not isinstance(node, Node):
        raise KernelError(errno.ENOTDIR)
    return node


def at_node(k: Kernel, dirfd: int, pathname: int, flags: int, *, follow: bool | None = None) -> Node:
    """The node an ``*at`` call names, ``AT_EMPTY_PATH`` (the ``dirfd`` itself) too."""
    path = k.read_str(pathname) if pathname or not flags & AT_EMPTY_PATH else ""
    if not path and flags & AT_EMPTY_PATH:
        if s32(dirfd) == AT_FDCWD:
            return k.fs.lookup(k, ".")
        return fd_node(k, dirfd)
    if follow is None:
        follow = not flags & AT_SYMLINK_NOFOLLOW
    return k.fs.lookup(k, path, dir_base(k, dirfd, path), follow=follow)
