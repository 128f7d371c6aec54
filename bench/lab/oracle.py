"""The oracle: what the stations really hold, against what a CSMS's view shows, outside both
protocols.

Both architectures are judged the same way. The *truth* is every change a station made
(``truth(t, key, value)``: its own ground truth, recorded by the station or the simulated
charger itself, never read through the protocol under test). The *view* is what the CSMS
under test showed for the same keys (``seen(t, key, value)``). From the two:

* ``lost``: keys whose last true value the view never showed by the end of the run;
* ``staleness``: for each true change, how long until the view showed that value or a later
  one (a view that skips an intermediate value is not stale for it: it caught up);
  unresolved changes are counted apart, never averaged in;
* ``consistent_at``: the first moment from ``since`` at which at least ``fraction`` of the
  keys showed their true value (a recovery curve's 99 % point);
* ``recovery_curve``: the fraction of keys showing their true value over time.

Times are seconds of the run's clock (the same clock for both sides: the lab's process).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Key:
    truth: list[tuple[float, Any]] = field(default_factory=list)  # (time, value), in order
    seen: list[tuple[float, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Staleness:
    """How long the view took to show each true change; ``unresolved``: changes it never
    showed (nor anything after them)."""

    delays_s: list[float]
    unresolved: int


class Oracle:
    """See the module docstring."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}

    def truth(self, t: float, key: str, value: Any) -> None:
        """A station changed ``key`` to ``value`` at ``t`` (in time order per key)."""
        self._keys.setdefault(key, _Key()).truth.append((t, value))

    def seen(self, t: float, key: str, value: Any) -> None:
        """The view showed ``key`` as ``value`` at ``t`` (in time order per key)."""
        self._keys.setdefault(key, _Key()).seen.append((t, value))

    @property
    def keys(self) -> list[str]:
        return sorted(k for k, entry in self._keys.items() if entry.truth)

    def lost(self) -> list[str]:
        """Keys whose final true value the view does not show at the end."""
        return [key for key in self.keys
                if not self._keys[key].seen
                or self._keys[key].seen[-1][1] != self._keys[key].truth[-1][1]]

    def staleness(self, since: float = float("-inf")) -> Staleness:
        """The delays of the true changes after ``since`` (what a first poll found is a
        baseline, no change)."""
        delays: list[float] = []
        unresolved = 0
        for entry in self._keys.values():
            for index, (t, _) in enumerate(entry.truth):
                if t <= since:
                    continue
                shown = self._first_showing(entry, index, t)
                if shown is None:
                    unresolved += 1
                else:
                    delays.append(shown - t)
        return Staleness(sorted(delays), unresolved)

    @staticmethod
    def _first_showing(entry: _Key, index: int, after: float) -> float | None:
        """When the view first showed the ``index``-th true value, or any later one, at or
        after ``after``: at ``after`` itself when the view already showed it then (the view
        was read before the truth noticed its own change)."""
        later = {repr(value) for _, value in entry.truth[index:]}
        before = [value for t, value in entry.seen if t <= after]
        if before and repr(before[-1]) in later:
            return after
        for t, value in entry.seen:
            if t >= after and repr(value) in later:
                return t
        return None

    def _sweep(self) -> list[tuple[float, float]]:
        """``(t, fraction consistent just after t)`` at every change of either side, in time
        order: one pass over all events."""
        keys = self.keys
        if not keys:
            return []
        wanted = set(keys)
        events = sorted(((t, 0 if side == "truth" else 1, key, value)
                         for key, entry in self._keys.items() if key in wanted
                         for side, changes in (("truth", entry.truth), ("seen", entry.seen))
                         for t, value in changes), key=lambda e: e[:3])
        true: dict[str, Any] = {}
        shown: dict[str, Any] = {}
        same = len(keys)  # nothing true, nothing shown: equal
        points: list[tuple[float, float]] = []
        for t, side, key, value in events:
            before = true.get(key) == shown.get(key)
            (true if side == 0 else shown)[key] = value
            same += (true.get(key) == shown.get(key)) - before
            if points and points[-1][0] == t:
                points[-1] = (t, same / len(keys))
            else:
                points.append((t, same / len(keys)))
        return points

    def fraction_consistent(self, t: float) -> float:
        """The fraction of keys showing their true value at ``t``."""
        points = self._sweep()
        i = bisect.bisect_right([p for p, _ in points], t) - 1
        return points[i][1] if i >= 0 else 1.0

    def recovery_curve(self, since: float, until: float, step: float
                       ) -> list[tuple[float, float]]:
        """``(t, fraction consistent)`` from ``since`` to ``until`` every ``step`` seconds."""
        points = self._sweep()
        times = [p for p, _ in points]
        curve: list[tuple[float, float]] = []
        t = since
        while t <= until + 1e-9:
            i = bisect.bisect_right(times, t) - 1
            curve.append((round(t, 6), points[i][1] if i >= 0 else 1.0))
            t += step
        return curve

    def consistent_at(self, since: float, fraction: float = 0.99) -> float | None:
        """The first moment at or after ``since`` when ``fraction`` of the keys showed their
        true value (checked at every change of either side), or ``None``."""
        points = self._sweep()
        times = [p for p, _ in points]
        i = bisect.bisect_right(times, since) - 1
        if i >= 0 and points[i][1] >= fraction:
            return since
        for t, share in points[i + 1:]:
            if share >= fraction:
                return t
        return None


def from_events(events: Iterable[tuple[float, str, str, Any]]) -> Oracle:
    """An oracle from recorded events ``(t, "truth" | "seen", key, value)``."""
    oracle = Oracle()
    for t, side, key, value in sorted(events, key=lambda e: e[0]):
        (oracle.truth if side == "truth" else oracle.seen)(t, key, value)
    return oracle


__all__ = ["Oracle", "Staleness", "from_events"]
