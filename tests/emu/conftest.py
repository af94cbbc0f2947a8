"""Fixtures for the emulator's tests on real guest binaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guests import guest_bin as _guest_bin


@pytest.fixture(scope="session")
def guest_bin() -> Path:
    """``guest/bin``, built once per session by ``make -C guest``."""
    return _guest_bin()
