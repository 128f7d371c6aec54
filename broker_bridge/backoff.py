"""One retry policy for every loop that tries again: capped exponential backoff with jitter.

Thousands of stations that lose their CSMS at the same moment must not all come back at the
same moment (reconnect storms are a known failure of OCPP deployments), so every delay is
drawn at random below its ceiling: ``ceiling = min(cap_s, base_s * factor ** (failures - 1))``
and the delay is uniform in ``[floor * ceiling, ceiling]``. ``floor = 0`` is "full jitter"
(the widest spread, for crowds), a higher floor keeps a lone retrier from hammering a peer
right after it failed. Pure: the random generator is passed in (seed it in tests), and the
caller waits with its own clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait after ``failures`` failures in a row (see the module docstring);
    ``attempts``: how many failures a caller tolerates before giving up (``None``: never)."""

    base_s: float
    cap_s: float
    factor: float = 2.0
    floor: float = 0.0
    attempts: int | None = None

    def __post_init__(self) -> None:
        if not (0 < self.base_s <= self.cap_s and self.factor >= 1 and 0 <= self.floor <= 1):
            raise ValueError(f"not a backoff: {self}")

    def ceiling(self, failures: int) -> float:
        """The longest delay after ``failures`` (at least 1) failures in a row."""
        exponent = max(0, failures - 1)
        if exponent > 64:  # far past the cap; keep the float finite
            return self.cap_s
        return min(self.cap_s, self.base_s * self.factor ** exponent)

    def delay(self, failures: int, rng: random.Random) -> float:
        """A delay after ``failures`` failures in a row, drawn with ``rng``."""
        ceiling = self.ceiling(failures)
        return rng.uniform(self.floor * ceiling, ceiling)

    def gives_up(self, failures: int) -> bool:
        """Whether a caller that failed ``failures`` times in a row should stop trying."""
        return self.attempts is not None and failures > self.attempts


__all__ = ["Backoff"]
