"""Where a guest's standard output and error go: ``Machine.stdout``/``stderr``.

The guest writes bytes. A binary stream (``io.BytesIO``, ``sys.stdout.buffer``,
an open file) receives them as they are; a text stream (``io.StringIO``,
``sys.stdout``) receives them decoded as UTF-8 with replacement characters.
The default, :class:`HostStream`, is the host's stream as it is at write time
(so pytest's capture or a redirection made after loading still applies).
"""

from __future__ import annotations

import io
import sys
from typing import IO, Any

__all__ = ["HostStream", "write_stream"]


class HostStream:
    """The host's ``sys.stdout`` or ``sys.stderr`` (binary layer), looked up per write."""

    def __init__(self, name: str) -> None:
        if name not in ("stdout", "stderr"):
            raise ValueError(f"no host stream {name!r}")
        self.name = name

    def write(self, data: bytes) -> int:
        stream: IO[Any] = getattr(sys, self.name)
        write_stream(stream, data)
        return len(data)

    def flush(self) -> None:
        getattr(sys, self.name).flush()

    def __repr__(self) -> str:
        return f"HostStream({self.name!r})"


def write_stream(stream: Any, data: bytes) -> None:
    """Write guest bytes to a binary or a text stream, then flush it."""
    if isinstance(stream, io.TextIOBase) or (
            not isinstance(stream, (io.RawIOBase, io.BufferedIOBase, HostStream))
            and hasattr(stream, "encoding")):
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            stream.flush()
            buffer.write(data)
            buffer.flush()
            return
        stream.write(data.decode("utf-8", errors="replace"))
    else:
        stream.write(data)
    flush = getattr(stream, "flush", None)
    if flush is not None:
        flush()
