"""The guest's file view: a mount table of host trees and emulated file systems,
and the path walk over it. Deny by default.

Two views:
- ``FsPolicy(root, writable, files)`` (``--fs none``, issue #4): read-only, the
  system library directories (``/lib``, ``/lib64``, ``/usr/lib``,
  ``/usr/lib64``, ``/usr/local/lib``), ``/etc/ld.so.cache`` and the ``files``
  (the executable); the directory ``root`` (read-only unless ``writable``),
  which is the guest's working directory. Without one, the host's working
  directory is the guest's, readable by nothing.
- ``FsPolicy.system(cwd, writable=...)`` (``--fs system``, issue #11): read-only
  ``/usr``, ``/lib``, ``/lib64``, ``/bin``, ``/sbin`` and ``/etc`` less its
  secrets (:func:`._hostfs.is_secret`), the working directory (read-only
  unless ``writable``), an in-memory ``/tmp`` and ``/dev/shm`` (:mod:`._memfs`)
  shared by every process of the run and gone with it.
Both: ``/proc`` (:mod:`._procfs`) and ``/dev`` (:mod:`._devfs`) are emulated,
never the host's; ``mounts`` (``--mount HOST[:GUEST][:ro|rw]``) map host trees.
Host trees sit at their real path (the guest's path is the host's) unless a
mount says otherwise; a host symlink to a directory of the view (``/bin`` ->
``usr/bin``) stays a symlink.

Paths are walked in the guest's namespace (:mod:`._namei`); host trees are
looked up with ``lstat`` and their symlinks come back to that walk
(:mod:`._hostfs`), so neither a symlink nor ``..`` leads out of the view, and a
mount is judged by its real path. Directories on the way to a mount point
(``/work`` above ``/work/main``) show only what leads to it.

Outside the view: a path the host has is ``EACCES`` and a denial
(:class:`._vnode.Denied`, reported by the syscall layer); one the host lacks is
``ENOENT``, no denial. A write into a read-only part is a denial too.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ._devfs import DevMount
from ._files import OpenFile
from ._hostfs import HostMount, HostNode, is_secret
from ._memfs import TMP_LIMIT, MemFs, MemMount, memfd
from ._namei import Walk
from ._procfs import ProcMount
from ._registry import KernelError
from ._vnode import (
    ACC_R,
    DT_DIR,
    O_ACCMODE,
    O_RDONLY,
    Dirent,
    DirStream,
    Node,
    Passage,
    PathFile,
    SymlinkNode,
    check_open_mode,
    dtype_of,
    join,
    path_ino,
)

if TYPE_CHECKING:
    from ._kernel import Kernel

__all__ = ["FsPolicy", "Mount", "parse_mount", "SYSTEM_LIBRARY_DIRS", "SYSTEM_DIRS"]

SYSTEM_LIBRARY_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin", "/sbin")     # code, in the system view
_READ_ONLY_FILES = ("/etc/ld.so.cache", "/etc/ld.so.preload")
O_CREAT, O_TRUNC = 0o100, 0o1000
O_DIRECTORY, O_NOFOLLOW, O_PATH, O_TMPFILE = 0o200000, 0o400000, 0o10000000, 0o20200000


class _MountPoint(Protocol):
    def root(self, k: Kernel | None, guest: str) -> Node: ...


@dataclass(frozen=True)
class Mount:
    """A host file or tree at a guest path (``--mount HOST[:GUEST][:ro|rw]``)."""

    host: str
    guest: str
    writable: bool = False


def parse_mount(text: str) -> Mount:
    """``HOST[:GUEST][:ro|rw]``: GUEST defaults to HOST, the mode to ``ro``.

    Raises:
        ValueError: an empty host, a relative guest path, too many fields, a bad mode.
    """
    parts = text.split(":")
    writable = False
    if len(parts) > 1 and parts[-1] in ("ro", "rw"):
        writable = parts.pop() == "rw"
    if len(parts) > 2:
        raise ValueError(f"mount {text!r}: expected HOST[:GUEST][:ro|rw]")
    host = parts[0]
    guest = parts[1] if len(parts) == 2 else host
    if not host:
        raise ValueError(f"mount {text!r}: no host path")
    if len(parts) == 2 and not guest.startswith("/"):
        raise ValueError(f"mount {text!r}: the guest path {guest!r} is not absolute (or mode not ro/rw)")
    return Mount(host, guest, writable)


def _real(path: str) -> str:
    return os.path.realpath(path)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class _LinkMount:
    """A symlink in the mount table (``/bin`` -> ``usr/bin``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def root(self, k: Kernel | None, guest: str) -> Node:
        return SymlinkNode(guest, self.text)


class FsPolicy:
    """The guest's view of files (see the module docstring).

    Args:
        root: the host directory mapped as the guest's working directory, or ``None``.
        writable: whether the guest may create and write files under ``root``.
        files: further single files readable by the guest (executable, scripts).
        mounts: host trees mapped into the view.
    Raises:
        NotADirectoryError: ``root`` is not a directory.
        FileNotFoundError: a mount's host path does not exist.
    """

    def __init__(self, root: str | None = None, writable: bool = False, files: Sequence[str] = (),
                 *, mounts: Sequence[Mount] = ()) -> None:
        if root is not None and not os.path.isdir(root):
            raise NotADirectoryError(f"fs_root {root!r} is not a directory")
        self._configure(root, writable, files, mounts, system=False, tmp_size=TMP_LIMIT)

    @classmethod
    def system(cls, cwd: str | None = None, *, writable: bool = False, mounts: Sequence[Mount] = (),
               files: Sequence[str] = (), tmp_size: int = TMP_LIMIT) -> FsPolicy:
        """The practical view (``--fs system``): the system directories and ``/etc``
        read-only, ``cwd`` (default: the host's) read-only unless ``writable``,
        ``/tmp`` and ``/dev/shm`` in memory (``tmp_size`` bytes at most).

        Raises:
            NotADirectoryError: ``cwd`` is not a directory.
            FileNotFoundError: a mount's host path does not exist.
        """
        cwd = os.getcwd() if cwd is None else cwd
        if not os.path.isdir(cwd):
            raise NotADirectoryError(f"working directory {cwd!r} is not a directory")
        self = cls.__new__(cls)
        self._configure(cwd, writable, files, mounts, system=True, tmp_size=tmp_size)
        return self

    def _configure(self, root: str | None, writable: bool, files: Sequence[str],
                   mounts: Sequence[Mount], *, system: bool, tmp_size: int) -> None:
        self.root = _real(root) if root is not None else None
        self.writable = writable
        self.files = tuple(files)
        self.mounts = tuple(mounts)
        self.is_system = system
        self.memfs = MemFs(tmp_size)
        self._anon = MemMount(self.memfs)               # memfd_create's files
        self._table: dict[str, _MountPoint] = {}
        self._code: list[str] = []                      # host roots code may come from
        links: list[tuple[str, str, str]] = []
        for d in (*SYSTEM_DIRS, "/etc") if system else SYSTEM_LIBRARY_DIRS:
            if os.path.islink(d):
                links.append((d, os.readlink(d), _real(d)))
            elif os.path.isdir(d):
                self._host(d, _real(d), False, code=d != "/etc")
        if self.root is not None:
            self._host(self.root, self.root, writable, code=True)
        self._table["/proc"] = ProcMount(self.mount_list)
        self._table["/dev"] = DevMount()
        if system:
            self._table["/tmp"] = MemMount(self.memfs)
            self._table["/dev/shm"] = MemMount(self.memfs)
        for m in mounts:
            if not os.path.lexists(m.host):
                raise FileNotFoundError(f"mount {m.host!r}: no such file or directory")
            guest = os.path.normpath(os.path.abspath(m.guest))
            self._host(guest, _real(m.host), m.writable, code=True, user=True)
        for d, text, real in links:                     # a link to what the view shows stays one
            if self._identity(real):
                self._table.setdefault(d, _LinkMount(text))
            elif os.path.isdir(real):
                self._host(d, real, False, code=True)
        for f in (*_READ_ONLY_FILES, *files):
            real = _real(f)
            if os.path.isfile(real) and not self._identity(real):
                self._host(real, real, False, code=False)
        self._children: dict[str, set[str]] = {}
        for guest in self._table:
            while guest != "/":
                parent = os.path.dirname(guest)
                self._children.setdefault(parent, set()).add(os.path.basename(guest))
                guest = parent

    def _host(self, guest: str, real: str, writable: bool, *, code: bool, user: bool = False) -> None:
        self._table[guest] = HostMount(guest, real, writable, None if user else is_secret)
        if code and os.path.isdir(real):
            self._code.append(real)

    def _identity(self, real: str) -> bool:
        """``real`` is in the view at its own path (through a host mount)."""
        guest = max((g for g in self._table if _within(real, g)), key=len, default=None)
        mp = self._table.get(guest) if guest is not None else None
        return isinstance(mp, HostMount) and _within(real, mp.host) and mp.host == guest

    # --- the issue #4 interface: host real paths ----------------------------------------
    @property
    def cwd(self) -> str:
        """The guest's working directory at start (a guest path)."""
        return self.root or os.getcwd()

    def allows_code(self, real: str) -> bool:
        """Whether host real path ``real`` may hold an interpreter or a library: the
        system (library) directories, the working directory and the mounts; not
        single files, not ``/etc``."""
        return any(_within(real, d) for d in self._code)

    def allows(self, real: str, *, write: bool) -> bool:
        """Whether the view shows host real path ``real`` (for writing: writably)."""
        for mp in self._table.values():
            if isinstance(mp, HostMount) and mp.covers(real) and not (mp.hide and mp.hide(real)):
                if mp.writable or not write:
                    return True
        return False

    def resolve(self, path: str, base: str, *, write: bool = False, follow: bool = True,
                k: Kernel | None = None) -> str:
        """The host real path of guest ``path`` (relative to guest directory
        ``base``), if it is a host file of the view (``execve``, the loader). With
        ``write``, a file that does not exist yet may be named in a writable
        directory. With ``follow=False`` a final symlink is itself the answer.

        Raises:
            KernelError: ``ENOENT`` (also for ""), ``EACCES`` (a :class:`Denied`
                when the view refuses it; plain for ``/proc``, ``/dev``, ``/tmp``).
        """
        try:
            node = self.lookup(k, path, base, follow=follow)
        except KernelError as exc:
            if exc.errno != errno.ENOENT or not write:
                raise
            parent, name, _slash = self.lookup_parent(k, path, base)
            if not isinstance(parent, HostNode) or name in (".", ".."):
                raise
            parent._write_check(name)
            return join(parent.host, name)
        if not isinstance(node, HostNode):
            raise KernelError(errno.EACCES)
        if write:
            node._write_check()
        return node.host

    # --- the walk -----------------------------------------------------------------------
    def root_node(self, k: Kernel | None) -> Node:
        mp = self._table.get("/")
        return mp.root(k, "/") if mp is not None else Passage("/")

    def child(self, k: Kernel | None, node: Node, name: str) -> Node:
        """``name`` in directory ``node``: a mount point, the directory's own, or a
        directory on the way to a mount point."""
        guest = join(node.guest, name)
        mp = self._table.get(guest)
        if mp is not None:
            return mp.root(k, guest)
        try:
            return node.lookup(name)
        except KernelError:
            if guest in self._children:
                return Passage(guest)
            raise

    def is_mount_point(self, guest: str) -> bool:
        """``guest`` is a mount point or a directory on the way to one."""
        return guest in self._table or guest in self._children

    def extras(self, k: Kernel | None, guest: str) -> list[Dirent]:
        """The mount points and passages right under directory ``guest``."""
        out = []
        for name in sorted(self._children.get(guest, ())):
            path = join(guest, name)
            mp = self._table.get(path)
            dtype = DT_DIR
            if mp is not None:
                try:
                    dtype = dtype_of(mp.root(k, path).mode())
                except KernelError:
                    continue
            out.append(Dirent(name, path_ino(path), dtype))
        return out

    def lookup(self, k: Kernel | None, path: str, base: str | Node | None = None, *,
               follow: bool = True) -> Node:
        """The node guest ``path`` names, from ``base`` (a node, a guest directory,
        or the process's working directory)."""
        return Walk(self, k).walk(path, base, follow)

    def lookup_parent(self, k: Kernel | None, path: str,
                      base: str | Node | None = None) -> tuple[Node, str, bool]:
        """The directory holding the last component, that component (``"."`` for
        ``/``), and whether ``path`` ended with ``/``."""
        return Walk(self, k).parent(path, base)

    # --- open ---------------------------------------------------------------------------
    def open(self, k: Kernel, path: str, base: Node | None, flags: int, mode: int) -> OpenFile:
        """``do_filp_open``: the open file for ``openat(base, path, flags, mode)``."""
        if flags & O_TMPFILE == O_TMPFILE:
            raise KernelError(errno.EOPNOTSUPP)        # the C library then names a file itself
        walk = Walk(self, k)
        follow = not flags & O_NOFOLLOW
        if flags & O_PATH:
            return PathFile(walk.walk(path, base, follow))
        if flags & O_CREAT:
            got = walk.create(path, base, flags, mode)
            if isinstance(got, OpenFile):
                return got
            node = got
        else:
            node = walk.walk(path, base, follow)
        if node.is_link():
            raise KernelError(errno.ELOOP)
        if flags & O_DIRECTORY and not node.is_dir():
            raise KernelError(errno.ENOTDIR)
        if node.is_dir():
            if flags & O_ACCMODE != O_RDONLY or flags & (O_CREAT | O_TRUNC):
                raise KernelError(errno.EISDIR)
            if not node.access(k, ACC_R):
                raise KernelError(errno.EACCES)
            return self.dir_stream(k, node)
        if not isinstance(node, HostNode):
            check_open_mode(node, k, flags)
        return node.open(k, flags)

    def dir_stream(self, k: Kernel | None, node: Node) -> DirStream:
        def parent_ino() -> int:
            try:
                return self.lookup(k, os.path.dirname(node.guest) or "/", "/").stat().st_ino
            except KernelError:
                return 1
        return DirStream(node, self.extras(k, node.guest), parent_ino)

    def memfd(self, k: Kernel, name: str) -> OpenFile:
        return memfd(self._anon, k, name)

    def memfs_used(self) -> int:
        return self.memfs.used

    def mount_list(self) -> list[tuple[str, str, str, str]]:
        """``/proc/mounts``: (guest path, source, type, options), directories only."""
        out = [("/", "rootfs", "rootfs", "ro")]
        for guest in sorted(self._table):
            mp = self._table[guest]
            describe = getattr(mp, "describe", None)
            if describe is None or (isinstance(mp, HostMount) and not os.path.isdir(mp.host)):
                continue
            out.append((guest, *describe()))
        return out
