"""How far behind its event loop a process is, and how much coarser its periodic work should
therefore run.

Theory of operation. A process that hosts a thousand simulated stations, or a CSMS that applies
their updates, can ask of its event loop more than one core gives. Then every timer fires late
and every queue grows, and nothing says so: the process falls further behind for ever. ``Pace``
turns the measured *loop lag* (how late a timer fired) into one figure, ``stretch``: 1 when on
time, then 2, 4, ... up to ``max_stretch``. Periodic work that can be coarsened without being
wrong (a simulator's ticks, the interval in which a publisher coalesces commits, allocations
that copy changes would set off) multiplies its period by it, so the load falls until the loop
keeps up. What must not wait (critical and control traffic, acknowledgements, retransmissions,
a grid limit going down) never looks at it.

The rule, with hysteresis so that it does not oscillate:

    =================================================  ===================================
    smoothed lag (EWMA of the samples)                  stretch
    =================================================  ===================================
    above ``high_lag_s``, last change ``settle_s`` ago  doubles (at most ``max_stretch``)
    below ``low_lag_s`` for ``calm_s`` without a break  halves (at least 1)
    anything else                                       holds
    =================================================  ===================================

``settle_s`` gives a change time to show before the next one (queues drain first); ``calm_s``
is longer, so that the work comes back slowly and the loop is not overrun again at once.
Pure: the caller measures the lag and passes the time in (monotonic seconds).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PaceSettings:
    """The thresholds of ``Pace`` (see the module docstring); seconds."""

    high_lag_s: float = 0.2
    low_lag_s: float = 0.05
    settle_s: float = 2.0
    calm_s: float = 20.0
    max_stretch: int = 16
    smoothing: float = 0.3  # weight of a new sample in the smoothed lag

    def __post_init__(self) -> None:
        if not (0 <= self.low_lag_s < self.high_lag_s and self.settle_s >= 0
                and self.calm_s >= 0 and self.max_stretch >= 1 and 0 < self.smoothing <= 1):
            raise ValueError(f"not a pace: {self}")


@dataclass(frozen=True, slots=True)
class PaceChanged:
    """``stretch`` went from ``before`` to ``after`` at a smoothed lag of ``lag_s``."""

    before: int
    after: int
    lag_s: float


class Pace:
    """The stretch of one process's periodic work (see the module docstring)."""

    def __init__(self, settings: PaceSettings | None = None) -> None:
        self.settings = settings or PaceSettings()
        self.stretch = 1
        self.lag_s = 0.0  # smoothed
        self.max_lag_s = 0.0  # the largest sample so far
        self.samples = 0
        self.coarsened = 0  # times the stretch went up
        self.relaxed = 0  # times it went down
        self._changed_at: float | None = None
        self._calm_since: float | None = None

    def observe(self, lag_s: float, now: float) -> PaceChanged | None:
        """A timer fired ``lag_s`` seconds late at ``now``; the change it makes, if any."""
        s = self.settings
        lag_s = max(0.0, lag_s)
        self.samples += 1
        self.max_lag_s = max(self.max_lag_s, lag_s)
        self.lag_s = lag_s if self.samples == 1 else (
            s.smoothing * lag_s + (1 - s.smoothing) * self.lag_s)
        if self.lag_s >= s.low_lag_s:
            self._calm_since = None
        elif self._calm_since is None:
            self._calm_since = now
        before = self.stretch
        settled = self._changed_at is None or now - self._changed_at >= s.settle_s
        if self.lag_s > s.high_lag_s and settled and self.stretch < s.max_stretch:
            self.stretch = min(s.max_stretch, self.stretch * 2)
            self.coarsened += 1
        elif (self.stretch > 1 and self._calm_since is not None
              and now - self._calm_since >= s.calm_s and settled):
            self.stretch //= 2
            self.relaxed += 1
            self._calm_since = now  # the next step down waits for another calm period
        if self.stretch == before:
            return None
        self._changed_at = now
        return PaceChanged(before, self.stretch, self.lag_s)

    @property
    def behind(self) -> bool:
        """Whether periodic work runs coarser than planned now."""
        return self.stretch > 1


__all__ = ["Pace", "PaceChanged", "PaceSettings"]
