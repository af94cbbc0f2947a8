"""Running the engine: ``emu_start`` with Unicorn's instruction counter.

Unicorn counts the instructions of a counted run (``emu_start(count=N)``) with
a code hook of its own. Three facts of Unicorn 2.1 shape this module:
- the count hook only sees blocks translated after it was added, so entering
  counted mode must drop the translation cache (:meth:`Engine.start` does);
- an uncounted start removes the hook, so a run nested in a counted one (a
  handler's ``call``) must stay counted, and the outer run's count be put back;
- the counter cells (see below) tell how many instructions a run retired, and
  lowering the limit to the counter from inside a hook stops the engine before
  the next instruction (:meth:`Engine.cut`), with no effect on the current one.
"""

from __future__ import annotations

import ctypes
import struct
import threading
from typing import Any

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc, UcError
from unicorn.unicorn_const import UC_QUERY_TIMEOUT

from . import native
from ._regtable import MASK64

__all__ = ["Engine", "UNLIMITED"]

UNLIMITED = (1 << 63) - 1         # a count that never runs out


# --- the instruction counter of uc_emu_start(count=N) ----------------------------------
# Unicorn counts the instructions of a counted run in ``uc->emu_counter`` and stops
# when it passes ``uc->emu_count`` (two adjacent uint64 fields of ``struct
# uc_struct``, not exported). Reading the first tells how many instructions a
# slice retired; lowering the second to the first from inside a hook stops the
# engine before the next instruction, which is how the scheduler ends a slice
# at a probe hit without disturbing the hit. The offset is found once per process
# on a scratch engine: the one pair of cells that reads (n + 1, n) after runs
# stopped by three different counts n.
_COUNTER_SCAN = 0x8000
_counter_offset: int | None | bool = False     # False: not looked for yet


def _find_counter_offset() -> int | None:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0x1000, 0x2000)
    uc.mem_write(0x1000, b"\x90" * 0x1000 + b"\xf4")
    base = uc._uch.value
    candidates: set[int] | None = None
    for n in (37, 91, 5):
        uc.emu_start(0x1000, 0x2000, 0, n)
        blob = ctypes.string_at(base, _COUNTER_SCAN)
        found = {off for off in range(0, _COUNTER_SCAN - 16, 8)
                 if struct.unpack_from("<QQ", blob, off) == (n + 1, n)}
        candidates = found if candidates is None else candidates & found
    if candidates is None or len(candidates) != 1:
        return None
    return candidates.pop()


def _counter_cells(uc: Uc) -> tuple[Any, Any] | None:
    """``(emu_counter, emu_count)`` of ``uc`` as live ``c_uint64`` cells, or None
    when this build of Unicorn does not show them where expected."""
    global _counter_offset
    if _counter_offset is False:
        try:
            _counter_offset = _find_counter_offset()
        except Exception:       # a scan that cannot run: no counter, the slow path
            _counter_offset = None
    if _counter_offset is None:
        return None
    base = uc._uch.value + int(_counter_offset)
    return ctypes.c_uint64.from_address(base), ctypes.c_uint64.from_address(base + 8)


class Engine:
    """``emu_start`` of one Unicorn engine, counted or not, and its counter."""

    def __init__(self, uc: Uc) -> None:
        self._uc = uc
        self._cells = _counter_cells(uc)      # (emu_counter, emu_count) or None
        # The count hook is live: a cell the native core reads (see counting).
        self._counting = native.Cell(0)
        self.cut_requested = False            # cut() stopped the last run on purpose
        # Ctrl-C (emu._interrupt): set by the watchdog thread; no start while set.
        # _gate orders the watchdog's stops against starts, so a stop reaches a
        # run in progress (_active: nesting depth) or, late, a finished one (a
        # no-op), never a later run: that one would not start while interrupted.
        self.interrupted = False
        self._active = 0
        self._gate = threading.Lock()

    @property
    def counting(self) -> bool:
        return bool(self._counting.value)

    @counting.setter
    def counting(self, value: bool) -> None:
        self._counting.value = int(value)

    def clock_cells(self) -> tuple[int, int]:
        """For native code: the addresses of the counting flag (an int64) and of
        the retired-instruction counter (a uint64; 0 without one), read as
        :meth:`in_flight` does."""
        cells = self._cells
        counter = ctypes.addressof(cells[0]) if cells is not None else 0
        return self._counting.address(), counter

    @property
    def has_counter(self) -> bool:
        """The counter cells were found: exact retired counts and cuts."""
        return self._cells is not None

    def start(self, begin: int, until: int, timeout_us: int, count: int) -> UcError | None:
        """One ``emu_start``; the error it raised, if any.

        Raises:
            KeyboardInterrupt: Ctrl-C stopped the run this start belongs to
                (nothing ran).
        """
        with self._gate:
            if self.interrupted:
                raise KeyboardInterrupt
            self._active += 1
        try:
            if count and not self.counting:
                self._uc.ctl_flush_tb()  # type: ignore[attr-defined]
            self.counting = bool(count)
            self.cut_requested = False
            self._uc.emu_start(begin, until, timeout_us, count)
        except UcError as exc:
            return exc
        finally:
            self._active -= 1
        return None

    def stop_if_running(self) -> bool:
        """From another thread: stop the ``emu_start`` in progress, if any (True)."""
        with self._gate:
            if self._active:
                self._uc.emu_stop()
                return True
            return False

    def timed_out(self) -> bool:
        """The last start ended by its own ``timeout`` (Unicorn's flag, exact)."""
        return bool(self._uc.query(UC_QUERY_TIMEOUT))

    def retired(self, count: int) -> int:
        """Instructions the last counted start retired (``count`` when the counter
        cannot be read: an estimate, still deterministic)."""
        cells = self._cells
        if not count:
            return 0
        if cells is None:
            return count
        return min(cells[0].value, cells[1].value)

    def in_flight(self) -> int:
        """From a hook: instructions the counted run in progress has retired so far."""
        cells = self._cells
        if cells is None or not self.counting:
            return 0
        return int(cells[0].value)

    def cut(self) -> bool:
        """From a hook: stop before the next instruction (the one being hooked, or
        the one RIP was redirected to, still runs first). False when it cannot."""
        cells = self._cells
        if cells is None or not self.counting:
            return False
        cells[1].value = cells[0].value
        self.cut_requested = True
        return True

    def save(self) -> tuple[int, int, bool, bool] | None:
        """The counter of the run in progress, before a nested run."""
        cells = self._cells
        if cells is None:
            return None
        return cells[0].value, cells[1].value, self.counting, self.cut_requested

    def restore(self, state: tuple[int, int, bool, bool]) -> None:
        """After a nested run: the outer run goes on where it was."""
        cells = self._cells
        assert cells is not None
        counter, count, counting, cut = state
        cells[0].value = counter
        self.cut_requested = cut
        if counting:
            cells[1].value = count
        else:
            # The nested run added the count hook; the outer run must not stop on it,
            # and its next counted start must drop the blocks translated uncounted.
            cells[1].value = MASK64
            self.counting = False
