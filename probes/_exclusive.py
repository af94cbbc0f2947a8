"""Probe registration and control hold the machine (``Machine.exclusive``): they
patch guest memory and add engine hooks, which must never race a run on
another host thread (a Machine is single-threaded; see emu/_machine.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from emu import Machine

__all__ = ["exclusive"]

F = TypeVar("F", bound=Callable[..., Any])


def exclusive(fn: F) -> F:
    """Run ``fn(m, ...)`` holding ``m`` (``EmuError`` at once if another thread is in it)."""
    @functools.wraps(fn)
    def wrapper(m: Machine, *args: Any, **kwargs: Any) -> Any:
        with m.exclusive():
            return fn(m, *args, **kwargs)
    return wrapper  # type: ignore[return-value]
