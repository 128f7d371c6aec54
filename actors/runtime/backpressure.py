"""An actor's back-pressure on its senders: when its handlers fall behind, its senders hold
their state and bulk envelopes for it (``Pause``), so the backlog waits in their priority
queues, not in the broker's or the sockets' FIFO buffers.

Why: the actor's inbox is a priority queue, so a critical envelope overtakes whatever waits
*in* it. But a receiver whose CPU is saturated reads its socket late, and what it has not read
yet waits, in arrival order, in the broker and in the kernel: a critical envelope sent then
queues behind every bulk byte before it (a busy receiver made a critical p99 of hundreds of
milliseconds). Holding the flood at its senders keeps those buffers short.

The rule: when ``pause_at`` state or bulk envelopes wait in the inbox, each sender whose
envelope arrives is asked to hold for ``hold_s``. Once the backlog is down to ``resume_at``,
senders held get a *credit* of ``credit_bytes`` with their hold renewed (a sender at most once
per ``regrant_s``; as many senders a time as the inbox has room for below ``pause_at``, the
longest waiting first, so hundreds of senders held are not all let in, nor each sent a frame,
at once): each sends that much and waits again. So a receiver that can take only part of
a flood takes it batch by batch, its backlog between ``resume_at`` and ``pause_at``, instead
of the whole of each sender's queue at once whenever a hold ends. When the flood stops, the
holds end by themselves. A ``Pause`` lost on the way costs only a little more backlog: the
next envelope from that sender asks again, and every hold ends by itself.
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
    credit_bytes: int = 32_768
    regrant_s: float = 0.02

    def __post_init__(self) -> None:
        if not (0 <= self.resume_at < self.pause_at and self.hold_s > 0
                and self.credit_bytes > 0 and 0 <= self.regrant_s < self.hold_s):
            raise ValueError(f"not back-pressure settings: {self}")


class Backpressure:
    """The held-class backlog of one actor's inbox and the senders it holds (see the module
    docstring)."""

    def __init__(self, address: str, clock: Clock,
                 settings: BackpressureSettings | None = None) -> None:
        self.address, self.clock = address, clock
        self.settings = settings or BackpressureSettings()
        self.backlog = 0
        self.pauses = 0  # holds asked of a sender (renewals included)
        self.credits = 0  # credits granted to senders held
        # (link, sender) -> (when its hold ends, when it was last given a credit)
        self._held: dict[tuple[Endpoint, str], tuple[float, float]] = {}
        self._looked_at = float("-inf")  # when ``taken`` last went over the senders held

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
        held = self._held.get(key)
        if held is None or held[0] - now < hold / 2:
            # when it last had a credit: never, for a sender just held
            self._held[key] = (now + hold, float("-inf") if held is None else held[1])
            self.pauses += 1
            link.pause_sender(self.address, env.source, hold)

    def taken(self, priority: Priority) -> None:
        """An envelope of ``priority`` left the inbox for its handler."""
        if priority not in HELD:
            return
        self.backlog -= 1
        if self.backlog > self.settings.resume_at or not self._held:
            return
        s = self.settings
        now = self.clock.monotonic()
        if now - self._looked_at < s.regrant_s:
            return  # the senders held were looked at just now: not once per envelope taken
        self._looked_at = now
        # credits for as many senders as the inbox has room for before it pauses again, the
        # longest waiting first: with hundreds of senders held, a credit (and a Pause frame)
        # to each of them every pass would flood the broker with Pauses and let the whole
        # flood in at once
        room = max(1, s.pause_at - self.backlog)
        for key, (ends, granted) in list(self._held.items()):
            if ends <= now:  # it ended by itself: the sender sends freely again
                del self._held[key]
            elif room > 0 and now - granted >= s.regrant_s:
                link, sender = key
                del self._held[key]  # to the end of the line
                self._held[key] = (now + s.hold_s, now)
                self.credits += 1
                room -= 1
                link.pause_sender(self.address, sender, s.hold_s,
                                  credit_bytes=s.credit_bytes)

    @property
    def holding(self) -> Counter[str]:
        """The senders held now, by link name."""
        return Counter(link.name for link, _ in self._held)


__all__ = ["Backpressure", "BackpressureSettings"]
