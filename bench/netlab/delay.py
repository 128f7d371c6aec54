"""When a held packet may leave: the pure part of the delayer, with time passed in.

A `DelayLine` holds one direction's packets in arrival order and lets each go at the time its
`ReleaseSchedule` gives, but never before the packet ahead of it: jitter then varies the delay
without reordering, as on a real path whose queue is a FIFO. The schedule is the hook for other
links: a trace-driven capacity (mahimahi-style delivery opportunities, one per line of a trace)
is another `ReleaseSchedule` whose release time depends on the packet's size and the trace.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

Item = TypeVar("Item")


class ReleaseSchedule(Protocol):
    """Gives each packet, on arrival, the earliest time it may leave."""

    def release_time(self, arrival: float, size: int) -> float: ...


@dataclass(slots=True)
class JitteredDelay:
    """A fixed delay plus a uniform jitter in [-jitter, +jitter], never below zero."""

    delay_s: float
    jitter_s: float
    rng: random.Random

    def release_time(self, arrival: float, size: int) -> float:
        jitter = self.rng.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s else 0.0
        return arrival + max(0.0, self.delay_s + jitter)


class DelayLine(Generic[Item]):
    """A FIFO of held items, each released at its scheduled time or after its predecessor."""

    def __init__(self, schedule: ReleaseSchedule) -> None:
        self.schedule = schedule
        self._held: deque[tuple[float, Item]] = deque()
        self._last_release = float("-inf")
        self.admitted = 0
        self.max_held = 0

    def admit(self, item: Item, now: float, size: int = 0) -> float:
        """Hold ``item``, arrived at ``now``; returns the time it will be released."""
        release = max(self.schedule.release_time(now, size), self._last_release)
        self._last_release = release
        self._held.append((release, item))
        self.admitted += 1
        self.max_held = max(self.max_held, len(self._held))
        return release

    def next_release(self) -> float | None:
        """When the oldest held item is due, or None when nothing is held."""
        return self._held[0][0] if self._held else None

    def due(self, now: float) -> list[tuple[float, Item]]:
        """Take out, in order, every item due at ``now``, each with its scheduled release time."""
        out: list[tuple[float, Item]] = []
        while self._held and self._held[0][0] <= now:
            out.append(self._held.popleft())
        return out

    def drain(self) -> list[Item]:
        """Take out everything still held, in order (on shutdown: let it go, do not lose it)."""
        items = [item for _, item in self._held]
        self._held.clear()
        return items

    def __len__(self) -> int:
        return len(self._held)
