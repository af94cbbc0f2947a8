"""The syscall layer's diagnostics: what it has to say about a run, kept apart
from the guest's own output.

Denied file accesses, unknown system calls, refused sockets and the layer's own
failures go to a :class:`Diagnostics` log shared by every process of a run.
Nothing is printed by default (the guest's stderr stays the guest's) but the
layer's own failures, which are bugs worth seeing at once; with
``verbose`` each entry is printed on the host's stderr as it happens, and
:meth:`Diagnostics.summary` gives the one line a front end prints at exit
("3 file accesses denied, 1 unknown syscall: run with -v").
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Diagnostics", "DENIED", "UNKNOWN_SYSCALL", "SOCKET", "EMULATOR_ERROR", "NOTE"]

DENIED = "denied"
UNKNOWN_SYSCALL = "unknown-syscall"
SOCKET = "socket"
EMULATOR_ERROR = "emulator-error"
NOTE = "note"          # worth a line with -v, not worth the summary
# kind -> (singular, plural) of the summary line, in its order.
_NOUNS = {
    DENIED: ("file access denied", "file accesses denied"),
    UNKNOWN_SYSCALL: ("unknown syscall", "unknown syscalls"),
    SOCKET: ("socket refused", "sockets refused"),
    EMULATOR_ERROR: ("emulator error", "emulator errors"),
}


@dataclass
class Diagnostics:
    """The log of one run (every process of it).

    Attributes:
        verbose: print each new entry on the host's stderr as it happens.
        entries: ``(kind, message)`` in order, each distinct key once.
        counts: entries per kind.
    """

    verbose: bool = False
    entries: list[tuple[str, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    _seen: set[object] = field(default_factory=set, repr=False)

    def log(self, kind: str, message: str, key: object = None) -> bool:
        """Record ``message`` once per ``key`` (default: the message); True when new."""
        key = (kind, message if key is None else key)
        if key in self._seen:
            return False
        self._seen.add(key)
        self.entries.append((kind, message))
        self.counts[kind] += 1
        if self.verbose or kind == EMULATOR_ERROR:
            print_line(message)
        return True

    def messages(self, kind: str | None = None) -> list[str]:
        return [message for k, message in self.entries if kind is None or k == kind]

    def summary(self) -> str | None:
        """One line for the end of a run, or None when nothing worth it happened."""
        parts = [f"{n} {_NOUNS[kind][n != 1]}" for kind in _NOUNS if (n := self.counts[kind])]
        if not parts:
            return None
        return ", ".join(parts) + ("" if self.verbose else ": run with -v")


def print_line(message: str) -> None:
    """One ``kprobe-emu:`` line on the host's stderr, if it has one (``2>&-``
    leaves ``sys.stderr`` None or closed)."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        print(f"kprobe-emu: {message}", file=stream, flush=True)
    except (OSError, ValueError):
        pass
