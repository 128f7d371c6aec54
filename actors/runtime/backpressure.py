"""An actor's back-pressure on its senders: when its handlers fall behind, its senders hold
their state and bulk envelopes for it (``Pause``), so the backlog waits in their priority
queues, not in the broker's or the sockets' FIFO buffers.

Why: the actor's inbox is a priority queue, so a critical envelope overtakes whatever waits
*in* it. But a receiver whose CPU is saturated reads its socket late, and what it has not read
yet waits, in arrival order, in the broker and in the kernel: a critical envelope sent then
queues behind every bulk byte before it (a busy receiver made a critical p99 of hundreds of
milliseconds). Holding the flood at its senders keeps those buffers short.

The rule: when ``pause_at`` state or bulk envelopes wait in the inbox, each sender whose
envelope arrives is asked to hold for ``hold_s`` (again when half of that has passed and the
backlog is still there); when the backlog is down to ``resume_at``, every sender held is told
to go on. A ``Pause`` lost on the way costs only a little more backlog: the next envelope from
that sender asks again, and a hold ends by itself.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from broker_bridge import Endpoint, Envelope, Priority
from broker_bridge.clock import Clock
from broker_bridge.session.outqueue import HELD


@dataclass(frozen=True, slots=True)
class BackpressureSettings:
    """Thresholds in envelopes waiting in the inbox; the hold in seconds."""

    pause_at: int = 64
    resume_at: int = 16
    hold_s: float = 0.5

    def __post_init__(self) -> None:
        if not (0 <= self.resume_at < self.pause_at and self.hold_s > 0):
            raise ValueError(f"not back-pressure settings: {self}")


class Backpressure:
    """The held-class backlog of one actor's inbox and the senders it holds (see the module
    docstring)."""

    def __init__(self, address: str, clock: Clock,
                 settings: BackpressureSettings | None = None) -> None:
        self.address, self.clock = address, clock
        self.settings = settings or BackpressureSettings()
        self.backlog = 0
        self.pauses = 0  # Pause requests sent (renewals included)
        self._held: dict[tuple[Endpoint, str], float] = {}  # (link, sender) -> hold ends at

    def arrived(self, env: Envelope, link: Endpoint | None) -> None:
        """``env`` was put in the inbox."""
        if env.priority not in HELD:
            return
        self.backlog += 1
        if link is None or self.backlog < self.settings.pause_at:
            return
        key = (link, env.source)
        now = self.clock.monotonic()
        hold = self.settings.hold_s
        ends = self._held.get(key)
        if ends is None or ends - now < hold / 2:
            self._held[key] = now + hold
            self.pauses += 1
            link.pause_sender(self.address, env.source, hold)

    def taken(self, priority: Priority) -> None:
        """An envelope of ``priority`` left the inbox for its handler."""
        if priority not in HELD:
            return
        self.backlog -= 1
        if self.backlog <= self.settings.resume_at and self._held:
            for link, sender in self._held:
                link.pause_sender(self.address, sender, 0.0)
            self._held.clear()

    @property
    def holding(self) -> Counter[str]:
        """The senders held now, by link name."""
        return Counter(link.name for link, _ in self._held)


__all__ = ["Backpressure", "BackpressureSettings"]
