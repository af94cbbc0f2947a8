"""Who may run a machine, and how a run is stopped from outside: the host's side.

- **One thread at a time** (:class:`Owner`): Unicorn engines are not thread-safe
  (two threads in one engine corrupt QEMU's state: segfaults, "stack smashing
  detected", wrong results), so a machine belongs to the host thread inside it
  until that thread leaves; another thread entering gets :class:`EmuError` at
  once. Callbacks of the owning thread (hooks, handlers) re-enter freely.
- **Ctrl-C** (:func:`watch`): while ``emu_start`` runs guest code in C with the
  GIL released, Python cannot run its SIGINT handler (it runs between
  bytecodes of the main thread), so a pure compute loop would never stop.
  During a run on the main thread, ``signal.set_wakeup_fd`` has the C-level
  handler write the signal number to a pipe at once, and a watchdog thread
  blocked on that pipe calls ``uc_emu_stop`` (what Unicorn's own timeout
  thread does) on every engine running for the main thread. The Python-level
  handler is replaced for the run by one that raises nothing: the machine
  raises ``KeyboardInterrupt`` itself where its state is whole (after a slice,
  with the task's registers saved), so the run can be resumed like one stopped
  by its budget. A second Ctrl-C during the same run raises at once, wherever
  Python is (a handler blocked in ``input()`` or ``sleep``). Outside runs, and
  when the program has a SIGINT handler of its own, nothing changes.
- **Limits** (:func:`check_max_insns`, :func:`check_timeout`): a budget is a
  positive number or ``None`` (unlimited); ``0``, negatives, NaN and infinity
  are refused instead of silently meaning "unlimited".
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]   # signal.py's C core (see watch)
import _thread
import math
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from ._errors import EmuError

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Owner", "watch", "watch_also", "unwatch", "check_max_insns", "check_timeout", "check_timeslice"]

# How often the watchdog repeats a stop until the run has seen it (an engine
# between its last check and the start of emulation ignores a stop).
_RESTOP_S = 0.005


class Owner:
    """The host thread inside a machine: a re-entrant, non-blocking guard.

    ``with owner:`` takes the machine for this thread (nested entries of the
    same thread are free) or raises :class:`EmuError` naming the thread inside.
    """

    __slots__ = ("_lock", "thread", "_holds")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.thread: int | None = None       # written only by the owning thread
        self._holds = 0

    def __enter__(self) -> Owner:
        me = threading.get_ident()
        if self.thread != me:
            if not self._lock.acquire(blocking=False):
                raise EmuError(f"machine in use by thread {self._owner_name()}: a Machine runs on "
                               f"one host thread at a time; give each thread its own Machine")
            self.thread = me
        self._holds += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._holds -= 1
        if not self._holds:
            self.thread = None
            self._lock.release()

    def _owner_name(self) -> str:
        ident = self.thread
        name = next((t.name for t in threading.enumerate() if t.ident == ident), "?")
        return f"{name!r} (id {ident})"


# --- Ctrl-C ------------------------------------------------------------------------------
# Engines of the runs in progress on the main thread (a handler of one machine may
# run another), the state the outermost run replaced, the pipe and the watchdog
# of this process. _deferred: our handler saw a SIGINT that no run has taken yet;
# _presses: how many times it ran during these runs.
_lock = threading.Lock()
_engines: list[Engine] = []
_saved: tuple[Any, int] | None = None         # (SIGINT handler, wakeup fd) to restore
_pipe: tuple[int, int] | None = None
_pipe_pid = 0
_deferred = False
_presses = 0
_main = threading.main_thread().ident


def _on_sigint(signum: int, frame: object) -> None:
    """SIGINT during a run: the watchdog stops the engines and the run raises;
    pressed again, Python's own KeyboardInterrupt, at once."""
    global _deferred, _presses
    _presses += 1
    if _presses > 1:
        _signal.default_int_handler(signum, frame)
    _deferred = True


def watch(engine: Engine) -> bool:
    """An outermost run of ``engine`` starts: have Ctrl-C stop it. False (and
    nothing done) off the main thread or when SIGINT is not Python's default."""
    global _saved, _presses
    if threading.get_ident() != _main:
        return False
    with _lock:
        if not _engines:
            _presses = 0
            # _signal, not signal: the module's wrappers convert to enums and
            # cost microseconds, paid on every outermost call.
            try:
                old = _signal.signal(signal.SIGINT, _on_sigint)
            except (ValueError, OSError):       # not the main interpreter
                return False
            if old is not _signal.default_int_handler:
                _signal.signal(signal.SIGINT, old)    # the program handles SIGINT itself
                return False
            try:
                fd = _signal.set_wakeup_fd(_wakeup_fd(), warn_on_full_buffer=False)
            except (OSError, ValueError, RuntimeError):
                _signal.signal(signal.SIGINT, old)
                return False
            _saved = (old, fd)
        engine.interrupted = False
        _engines.append(engine)
    return True


def watch_also(engine: Engine, like: Engine) -> bool:
    """Have Ctrl-C stop ``engine`` too while ``like`` (the run's first machine,
    :func:`watch` ed) is watched: another process's machine, for one slice."""
    with _lock:
        if like not in _engines or engine in _engines:
            return False
        engine.interrupted = like.interrupted
        _engines.append(engine)
    return True


def unwatch(engine: Engine) -> bool:
    """The run :func:`watch` started is over; True if Ctrl-C interrupted it."""
    global _saved
    with _lock:
        _engines.remove(engine)
        hit = engine.interrupted
        engine.interrupted = False
        if not _engines and _saved is not None:
            handler, fd = _saved
            _saved = None
            _signal.set_wakeup_fd(fd)
            _signal.signal(signal.SIGINT, handler)
    return hit


def _wakeup_fd() -> int:
    """The write end of this process's pipe, its watchdog started (once per process)."""
    global _pipe, _pipe_pid
    if _pipe is None or _pipe_pid != os.getpid():
        r, w = os.pipe()
        os.set_blocking(w, False)
        _pipe, _pipe_pid = (r, w), os.getpid()
        threading.Thread(target=_watchdog, args=(r,), name="kprobe-emu SIGINT watchdog",
                         daemon=True).start()
    return _pipe[1]


def _watchdog(rfd: int) -> None:
    while True:
        try:
            data = os.read(rfd, 64)
        except OSError:
            return
        if not data:
            return
        saved = _saved
        if saved is not None and saved[1] >= 0:    # whoever had the wakeup fd before us
            try:
                os.write(saved[1], data)
            except OSError:
                pass
        if signal.SIGINT in data:
            _interrupt()


def _interrupt() -> None:
    """One SIGINT: flag and stop the runs in progress, again until they stopped;
    with none left (it ended meanwhile), Python's own KeyboardInterrupt."""
    global _deferred
    with _lock:
        if not _engines:
            if _deferred:
                _deferred = False
                _thread.interrupt_main()
            return
        _deferred = False
        for engine in _engines:
            engine.interrupted = True
    while True:
        with _lock:
            running = [e for e in _engines if e.interrupted and e.stop_if_running()]
        if not running:
            return
        time.sleep(_RESTOP_S)


def _after_fork_in_child() -> None:
    """The watchdog thread does not survive fork: the child makes its own."""
    global _lock, _pipe, _saved, _deferred
    _lock = threading.Lock()
    _engines.clear()
    _saved = None
    _deferred = False
    if _pipe is not None:
        for fd in _pipe:
            try:
                os.close(fd)
            except OSError:
                pass
        _pipe = None


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- limits ------------------------------------------------------------------------------
def check_max_insns(value: int | None, what: str = "max_insns") -> int | None:
    """``value`` if it is ``None`` or a positive integer, else ValueError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive number of instructions or None "
                         f"(unlimited), got {value!r}")
    return value


def check_timeout(value: float | None, what: str = "timeout") -> float | None:
    """``value`` if it is ``None`` or a positive finite number of seconds, else ValueError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{what} must be a positive finite number of seconds or None "
                         f"(no limit), got {value!r}")
    return value


def check_timeslice(value: int) -> int:
    """A scheduler's longest slice: a positive integer, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"timeslice must be a positive number of instructions, got {value!r}")
    return value
