"""Which host files a guest may open: deny by default.

Rules (issue #4):
- read-only, always: the executable, its interpreter, ``/etc/ld.so.cache``, the
  system library directories (``/lib``, ``/lib64``, ``/usr/lib``, ``/usr/lib64``,
  ``/usr/local/lib``) and the harmless devices ``/dev/null``, ``/dev/zero``,
  ``/dev/urandom`` (``/dev/null`` also for writing);
- the directory mapped with ``fs_root`` (read-only unless ``fs_writable``); it is
  the guest's working directory, so relative paths land inside it (without one,
  the host's working directory is the guest's, readable by nothing);
- nothing else. A path is judged by its host real path (every ``..`` and symlink
  resolved), so neither can lead out of an allowed tree.
A denied access raises ``EACCES`` (the caller reports it once per path).

Code is stricter (:meth:`FsPolicy.allows_code`): the loader takes a ``PT_INTERP``
interpreter only from the system library directories or under ``fs_root``.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from ._registry import KernelError

__all__ = ["FsPolicy", "SYSTEM_LIBRARY_DIRS"]

SYSTEM_LIBRARY_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
_READ_ONLY_FILES = ("/etc/ld.so.cache", "/etc/ld.so.preload", "/dev/zero", "/dev/urandom", "/dev/random")
_READ_WRITE_FILES = ("/dev/null",)


def _real(path: str) -> str:
    return os.path.realpath(path)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass
class FsPolicy:
    """The guest's view of the host file system.

    Args:
        root: the host directory mapped for the guest, or ``None``.
        writable: whether the guest may create and write files under ``root``.
        files: further single files readable by the guest (executable, interpreter).
    """

    root: str | None = None
    writable: bool = False
    files: tuple[str, ...] = ()
    _ro_dirs: list[str] = field(default_factory=list, init=False, repr=False)
    _ro_files: set[str] = field(default_factory=set, init=False, repr=False)
    _rw_files: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.root is not None:
            if not os.path.isdir(self.root):
                raise NotADirectoryError(f"fs_root {self.root!r} is not a directory")
            self.root = _real(self.root)
        self._ro_dirs = sorted({_real(d) for d in SYSTEM_LIBRARY_DIRS if os.path.isdir(d)})
        self._ro_files = {_real(f) for f in (*_READ_ONLY_FILES, *self.files)}
        self._rw_files = {_real(f) for f in _READ_WRITE_FILES}

    @property
    def cwd(self) -> str:
        """The guest's working directory: the mapped root, else the host's (which
        the guest can then name but not read)."""
        return self.root or os.getcwd()

    def resolve(self, path: str, base: str, *, write: bool = False, follow: bool = True) -> str:
        """The host real path of guest ``path`` (relative to ``base``), if allowed.

        With ``follow=False`` the last component is kept as it is (``lstat``,
        ``readlink``, ``unlink`` act on a symlink, not on its target).

        Raises:
            KernelError: ``EACCES`` when the policy denies it, ``ENOENT`` for "".
        """
        if not path:
            raise KernelError(errno.ENOENT)
        full = os.path.join(base, path)
        head, tail = os.path.split(full)
        if follow or tail in ("", ".", ".."):
            real = _real(full)
        else:
            real = os.path.join(_real(head), tail)
        if self.allows(real, write=write):
            return real
        raise KernelError(errno.EACCES)

    def allows_code(self, real: str) -> bool:
        """Whether host real path ``real`` may hold an interpreter or a library: the
        system library directories and ``fs_root`` only (not the single files)."""
        return (self.root is not None and _within(real, self.root)) or any(
            _within(real, d) for d in self._ro_dirs)

    def allows(self, real: str, *, write: bool) -> bool:
        if real in self._rw_files:
            return True
        if self.root is not None and _within(real, self.root):
            return self.writable or not write
        if write:
            return False
        return real in self._ro_files or any(_within(real, d) for d in self._ro_dirs)
