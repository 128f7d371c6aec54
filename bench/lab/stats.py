"""Figures across repetitions, with percentile-bootstrap 95 % confidence intervals.

``estimate(values, seed)`` resamples the repetitions' values with replacement
(``RESAMPLES`` times, from a generator seeded by the run's master seed, so a report re-renders
to the same numbers) and takes the 2.5th and 97.5th percentiles of the resampled means. With
fewer than two values there is no interval (``low`` and ``high`` are the value itself)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A figure's mean over the repetitions and its 95 % interval."""

    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 3) -> str:
        if self.n < 2:
            return f"{self.mean:.{digits}g} (n = {self.n})"
        return f"{self.mean:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}]"


def estimate(values: Sequence[float], seed: int) -> Estimate:
    """The mean of ``values`` with its bootstrap interval (see the module docstring)."""
    clean = [float(v) for v in values if math.isfinite(v)]
    if not clean:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = sum(clean) / len(clean)
    if len(clean) < 2:
        return Estimate(mean, mean, mean, len(clean))
    draw = random.Random(seed)
    means = sorted(sum(draw.choices(clean, k=len(clean))) / len(clean)
                   for _ in range(RESAMPLES))
    return Estimate(mean, means[int(0.025 * RESAMPLES)], means[int(0.975 * RESAMPLES) - 1],
                    len(clean))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


__all__ = ["RESAMPLES", "Estimate", "estimate", "percentile"]
