"""The one error type of :mod:`probes`: an ``OSError`` carrying the kernel's errno."""

from __future__ import annotations

import errno as _errno

__all__ = ["ProbeError"]


class ProbeError(OSError):
    """A registration was refused; ``.errno`` is the code the kernel returns.

    ``str(err)`` reads like ``[Errno 2] ENOENT: no symbol 'nosuch' in this machine``.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, f"{_errno.errorcode.get(code, code)}: {message}")
