"""The path walk of the file view (``fs/namei.c``: ``link_path_walk``,
``walk_component``, ``open_last_lookups``), in the guest's namespace.

One component at a time: ``.`` stays, ``..`` goes to the parent of the
canonical guest path (never above ``/``; a mount's root has the directory
above it as parent), a symlink's text is walked from the symlink's directory
(absolute text from the guest's ``/``), at most ``MAXSYMLINKS`` (40) of them
per walk (``ELOOP``); a name longer than ``NAME_MAX`` (255) bytes is
``ENAMETOOLONG``; a trailing ``/`` asks for a directory (``ENOTDIR``); a
component that is not a directory is ``ENOTDIR``; searching needs the ``x``
bit (``may_lookup``). ``/proc``'s magic links lead to a node, not a text.

A refusal of the view (``Denied``) becomes ``ENOENT`` where the host does not
have the rest of the path either: an absent path is no denial.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Protocol

from ._files import OpenFile
from ._registry import KernelError
from ._vnode import ACC_X, Denied, Node, join

if TYPE_CHECKING:
    from ._kernel import Kernel

__all__ = ["Walk", "Namespace", "MAXSYMLINKS", "NAME_MAX"]

MAXSYMLINKS, NAME_MAX = 40, 255
O_EXCL, O_NOFOLLOW = 0o200, 0o400000


class Namespace(Protocol):
    """What the walk needs of the mount table (:class:`._fs.FsPolicy`)."""

    @property
    def cwd(self) -> str: ...

    def root_node(self, k: Kernel | None) -> Node: ...

    def child(self, k: Kernel | None, node: Node, name: str) -> Node: ...


class Walk:
    """One path walk (``struct nameidata``): the symlink count is per walk."""

    def __init__(self, policy: Namespace, k: Kernel | None) -> None:
        self.p = policy
        self.k = k
        self.links = 0

    def start(self, path: str, base: str | Node | None) -> Node:
        if path.startswith("/"):
            return self.p.root_node(self.k)
        if isinstance(base, Node):
            return base
        if base is None:
            base = self.k.cwd if self.k is not None else self.p.cwd
        return self.walk(base, None, True) if base != "/" else self.p.root_node(self.k)

    def walk(self, path: str, base: str | Node | None, follow: bool) -> Node:
        if not path:
            raise KernelError(errno.ENOENT)
        comps = [c for c in path.split("/") if c]
        node = self.start(path, base)
        must_dir = path.endswith("/") and bool(comps)
        for i, name in enumerate(comps):
            last = i == len(comps) - 1
            node = self._component(node, name, comps[i + 1:], (not last) or follow or must_dir)
        if must_dir and not node.is_dir():
            raise KernelError(errno.ENOTDIR)
        return node

    def parent(self, path: str, base: str | Node | None) -> tuple[Node, str, bool]:
        if not path:
            raise KernelError(errno.ENOENT)
        comps = [c for c in path.split("/") if c]
        node = self.start(path, base)
        if not comps:
            return node, ".", True
        for i, name in enumerate(comps[:-1]):
            node = self._component(node, name, comps[i + 1:-1], True)
        if not node.is_dir():
            raise KernelError(errno.ENOTDIR)
        if len(comps[-1]) > NAME_MAX:
            raise KernelError(errno.ENAMETOOLONG)
        return node, comps[-1], path.endswith("/")

    def _component(self, node: Node, name: str, rest: list[str], follow: bool) -> Node:
        """One step, outside-the-view refusals made ``ENOENT`` where the host
        lacks the rest of the path."""
        try:
            return self._step(node, name, follow)
        except Denied as exc:
            tail = "/".join(rest)
            host = join(exc.host, tail) if tail else exc.host
            if not os.path.lexists(host):
                raise KernelError(errno.ENOENT) from None
            raise Denied(join(exc.guest, tail) if tail else exc.guest, host) from None

    def _step(self, node: Node, name: str, follow: bool) -> Node:
        if len(name) > NAME_MAX:
            raise KernelError(errno.ENAMETOOLONG)
        if not node.is_dir():
            raise KernelError(errno.ENOTDIR)
        if not node.access(self.k, ACC_X):
            raise KernelError(errno.EACCES)
        if name == ".":
            return node
        if name == "..":
            parent = os.path.dirname(node.guest) if node.guest.startswith("/") else "/"
            return self.walk(parent, None, True) if parent != "/" else self.p.root_node(self.k)
        child = self.p.child(self.k, node, name)
        while follow and child.is_link():
            child = self.follow(child, node)
        return child

    def follow(self, link: Node, directory: Node) -> Node:
        self.links += 1
        if self.links > MAXSYMLINKS:
            raise KernelError(errno.ELOOP)
        target = link.follow()
        if isinstance(target, Node):
            return target
        return self.walk(target, directory, True)

    def create(self, path: str, base: str | Node | None, flags: int, mode: int) -> Node | OpenFile:
        """``open_last_lookups`` with ``O_CREAT``: the existing file (through a
        dangling symlink too), or a new one ``EEXIST`` with ``O_EXCL``."""
        while True:
            parent, name, slash = self.parent(path, base)
            if slash or name in (".", ".."):
                raise KernelError(errno.EISDIR)
            try:
                child = self.p.child(self.k, parent, name)
            except KernelError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                assert self.k is not None
                return parent.create(self.k, name, flags, mode)
            if flags & O_EXCL:
                raise KernelError(errno.EEXIST)
            if not child.is_link() or flags & O_NOFOLLOW:
                return child
            self.links += 1
            if self.links > MAXSYMLINKS:
                raise KernelError(errno.ELOOP)
            target = child.follow()
            if isinstance(target, Node):
                return target
            path, base = target, parent
