"""The spread of a handful of paired samples: median, min, max and a 95% bootstrap
interval of the median.

The interval is the percentile bootstrap (Efron & Tibshirani, *An Introduction to
the Bootstrap*, ch. 13): resample the values with replacement, take each
resample's median, keep the 2.5th and 97.5th percentiles. The generator is
seeded, so the same samples always give the same interval.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Spread", "spread", "bootstrap_ci", "RESAMPLES", "SEED"]

RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Spread:
    """Median, extremes and the 95% bootstrap interval of the median of some values."""

    median: float
    min: float
    max: float
    ci95: tuple[float, float]

    @property
    def width(self) -> float:
        """The width of the 95% interval."""
        return self.ci95[1] - self.ci95[0]

    def scaled(self, factor: float) -> Spread:
        return Spread(self.median * factor, self.min * factor, self.max * factor,
                      (self.ci95[0] * factor, self.ci95[1] * factor))

    def to_json(self, digits: int = 4) -> dict[str, Any]:
        """``{"median", "min", "max", "ci95": [lo, hi]}``, rounded to ``digits``."""
        return {"median": round(self.median, digits), "min": round(self.min, digits),
                "max": round(self.max, digits),
                "ci95": [round(self.ci95[0], digits), round(self.ci95[1], digits)]}


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95, resamples: int = RESAMPLES,
                 seed: int = SEED) -> tuple[float, float]:
    """The percentile-bootstrap interval of the median of ``values`` at ``level``.

    Raises:
        ValueError: no values, or a level outside (0, 1).
    """
    if not values:
        raise ValueError("bootstrap_ci() needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    rng = random.Random(seed)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1 - level) / 2
    lo = medians[int(tail * (resamples - 1))]
    hi = medians[int(round((1 - tail) * (resamples - 1)))]
    return lo, hi


def spread(values: Sequence[float], *, seed: int = SEED) -> Spread:
    """The :class:`Spread` of ``values``. Raises ValueError when there are none."""
    if not values:
        raise ValueError("spread() needs at least one value")
    return Spread(statistics.median(values), min(values), max(values),
                  bootstrap_ci(values, seed=seed))
