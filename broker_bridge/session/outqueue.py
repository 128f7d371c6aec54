"""Outgoing envelopes: priority queues of per-destination batches, drained at the link's pace.

Theory of operation. XMPP brokers forward in arrival order, so priority can only be honoured
where the queue is: here, in the sender. Envelopes wait in one queue per priority class; the
transport is fed only as fast as it drains (its back-pressure ``budget``) and, optionally, as a
token bucket allows (``rate_bytes_per_s``). A critical envelope therefore waits at most for the
frame already on the wire, never behind queued bulk telemetry.

Within a class, envelopes for the same destination share a *batch* that stays open for the
class's batching window (zero for critical) or until it fills a frame; a closed batch leaves as
one frame. Expired envelopes are dropped when they reach the head, and counted.

A receiver that cannot keep up asks its senders to *hold* (``Pause``): the state and bulk
batches for it are set aside, in order, until the hold ends or it lifts it, so its backlog
waits here, where a critical envelope overtakes it, and not in the broker's or the sockets'
FIFO buffers. A hold may come with a *credit*: that many bytes may go before the rest wait
again (a receiver that keeps up with some of the flow grants it, batch by batch). Other
destinations' batches and every critical and control envelope go on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from broker_bridge.codec import encode_frame, frame_overhead
from broker_bridge.envelope import Envelope, Priority
from broker_bridge.session.config import SessionConfig
from broker_bridge.session.events import Frame

PRIORITIES = tuple(Priority)
HELD = frozenset({Priority.STATE, Priority.BULK})
"""The classes a receiver's ``Pause`` holds back."""
URGENT = frozenset({Priority.CRITICAL, Priority.CONTROL})
"""The classes a send window does not hold back (``pop_frames``'s ``urgent`` budget)."""


class _Batch:
    __slots__ = ("closed", "destination", "items", "key", "ready_at", "size")

    def __init__(self, key: tuple[Priority, str], ready_at: int) -> None:
        self.key = key
        self.destination = key[1]
        self.items: list[tuple[Envelope, bytes]] = []
        self.size = frame_overhead(0)
        self.ready_at = ready_at
        self.closed = False


class TokenBucket:
    """A byte budget refilled at ``rate`` per second, holding at most ``burst``.

    A frame may leave whenever the bucket is positive and may drive it negative (a frame
    larger than the burst must still be able to leave); the debt is repaid before the next."""

    def __init__(self, rate: float | None, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = 0

    def refill(self, now: int) -> None:
        if self.rate is None:
            return
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + self.rate * (now - self.updated) / 1e6)
            self.updated = now

    def allows(self) -> bool:
        return self.rate is None or self.tokens > 0

    def spend(self, size: int) -> None:
        if self.rate is not None:
            self.tokens -= size

    def ready_at(self) -> int:
        """When the bucket will be positive again (an absolute time)."""
        if self.rate is None or self.tokens > 0:
            return self.updated
        return self.updated + int((-self.tokens) / self.rate * 1e6) + 1


@dataclass
class QueueCounters:
    frames: int = 0
    bytes: int = 0
    envelopes: dict[Priority, int] = field(default_factory=lambda: dict.fromkeys(Priority, 0))
    expired: dict[Priority, int] = field(default_factory=lambda: dict.fromkeys(Priority, 0))
    dropped_overflow: int = 0


class OutQueue:
    """The sender's queues. ``push`` an encoded envelope; ``pop_frames`` what may leave now."""

    def __init__(self, config: SessionConfig, on_expired: Callable[[Envelope], None],
                 on_sent: Callable[[Envelope, int], None], *,
                 finish: Callable[[str, list[tuple[Envelope, bytes]]], list[bytes]] | None = None,
                 reserve: int = 0) -> None:
        """``finish``: the items of a frame as they leave (the guard's ``sign_frame``),
        for which ``reserve`` bytes of each frame are kept free."""
        self.config = config
        self._on_expired = on_expired
        self._on_sent = on_sent
        self._finish = finish
        self._queues: dict[Priority, deque[_Batch]] = {p: deque() for p in PRIORITIES}
        self._open: dict[tuple[Priority, str], _Batch] = {}
        self._bytes = 0
        self._count = dict.fromkeys(PRIORITIES, 0)
        self.bucket = TokenBucket(config.rate_bytes_per_s, config.burst_bytes)
        self._holds: dict[str, int] = {}  # destination -> held until
        self._credits: dict[str, int] = {}  # destination -> bytes it may still take meanwhile
        self._aside: dict[str, list[_Batch]] = {}  # its held batches, oldest first
        self._limits = {p: config.frame_limit(p) - reserve for p in PRIORITIES}
        self.counters = QueueCounters()

    def _class(self, priority: Priority) -> Priority:
        return priority if self.config.priorities else Priority.CRITICAL

    def push(self, envelope: Envelope, encoded: bytes, now: int) -> None:
        """Queue an envelope (``encoded`` must fit in one frame; the session chunks first)."""
        cls = self._class(envelope.priority)
        key = (cls, envelope.destination)
        batch = self._open.get(key)
        size = len(encoded) + 3
        if batch is not None and (batch.size + size > self._limits[envelope.priority]
                                  or len(batch.items) >= self.config.batch_max_envelopes):
            batch.closed = True  # full: it may leave now
            batch.ready_at = min(batch.ready_at, now)
            del self._open[key]
            batch = None
        if batch is None:
            window = self.config.batch_windows_us.get(envelope.priority, 0)
            batch = _Batch(key, now + window)
            self._queues[cls].append(batch)
            if window > 0:
                self._open[key] = batch
            else:
                batch.closed = True
        batch.items.append((envelope, encoded))
        batch.size += size
        self._bytes += size
        self._count[envelope.priority] += 1
        if self._bytes > self.config.max_queued_bytes:
            self._shed()

    def hold(self, destination: str, until: int, now: int, credit: int = 0) -> None:
        """Hold the state and bulk batches for ``destination`` until ``until`` (at or before
        ``now``: release them now), but for ``credit`` bytes of them, which may go first."""
        if until <= now:
            self._credits.pop(destination, None)
            if self._holds.pop(destination, None) is not None:
                self._release(destination)
            return
        self._holds[destination] = until
        self._credits[destination] = credit
        if credit > 0:
            self._release(destination)  # looked at again, in order, against the credit

    def held(self, destination: str, now: int) -> bool:
        """Whether a hold on ``destination`` is in force at ``now``."""
        return self._holds.get(destination, now) > now

    def _release(self, destination: str) -> None:
        """Put ``destination``'s held batches back at the head of their queues, in order."""
        batches = self._aside.pop(destination, [])
        for batch in reversed(batches):
            self._queues[batch.key[0]].appendleft(batch)

    def _release_due(self, now: int) -> None:
        for destination, until in list(self._holds.items()):
            if until <= now:
                del self._holds[destination]
                self._credits.pop(destination, None)
                self._release(destination)

    def _shed(self) -> None:
        """Over the memory bound: drop the oldest unreliable bulk, then state, envelopes.
        Dropping starts at the head and emptied batches leave the queue, so a producer that
        keeps pushing over the bound costs O(1) per push, not a rescan."""
        limit = self.config.max_queued_bytes
        for cls in (Priority.BULK, Priority.STATE):
            for destination, held in list(self._aside.items()):  # the held go first
                while self._bytes > limit and held:
                    if self._drop_unreliable(held[0], cls, limit):
                        break
                    held.pop(0)
                if not held:
                    del self._aside[destination]
            queue = self._queues[self._class(cls)]
            while self._bytes > limit and queue:
                batch = queue[0]
                if self._drop_unreliable(batch, cls, limit):
                    return  # the head holds envelopes we may not drop: stop here
                queue.popleft()
                if self._open.get(batch.key) is batch:
                    del self._open[batch.key]

    def _drop_unreliable(self, batch: _Batch, cls: Priority, limit: int) -> bool:
        """Drop ``batch``'s unreliable ``cls`` envelopes while over ``limit``; whether any
        envelope is left in it."""
        kept = []
        for env, enc in batch.items:
            if self._bytes > limit and not env.reliable and env.priority == cls:
                self._bytes -= len(enc) + 3
                batch.size -= len(enc) + 3
                self._count[env.priority] -= 1
                self.counters.dropped_overflow += 1
            else:
                kept.append((env, enc))
        batch.items = kept
        return bool(kept)

    def pop_frames(self, now: int, budget: int | None = None, *,
                   urgent: int | None = None) -> list[Frame]:
        """Frames that may leave now, highest priority first, within ``budget`` bytes (at least
        one frame when ``budget`` is positive; critical and control frames within ``urgent``
        instead, if given) and the rate limit."""
        out: list[Frame] = []
        spent = 0
        self.bucket.refill(now)
        if self._holds:
            self._release_due(now)
        for cls in PRIORITIES:
            queue = self._queues[cls]
            # one queue for all (priorities off) is not urgent: the window governs it
            own = urgent is not None and cls in URGENT and self.config.priorities
            limit = urgent if own else budget
            while queue:
                if limit is not None and (spent >= limit or limit <= 0):
                    if not own:
                        return out
                    break  # on to the classes the plain budget governs
                if not self.bucket.allows():
                    return out
                batch = self._ready_batch(queue, now)
                if batch is None:
                    break
                frame = self._build(batch, now)
                if frame is None:
                    continue
                out.append(frame)
                spent += len(frame.data)
                self.bucket.spend(len(frame.data))
        return out

    def _ready_batch(self, queue: deque[_Batch], now: int) -> _Batch | None:
        i = 0
        while i < len(queue):
            batch = queue[i]
            if batch.closed or batch.ready_at <= now:
                del queue[i]
                batch.closed = True
                if self._open.get(batch.key) is batch:
                    del self._open[batch.key]
                destination = batch.destination
                if destination in self._holds and batch.key[0] in HELD:
                    credit = self._credits.get(destination, 0)
                    if credit <= 0:
                        self._aside.setdefault(destination, []).append(batch)
                        continue  # set aside: look at the next
                    self._credits[destination] = credit - batch.size
                return batch
            if i >= 64:  # only closed batches may overtake; look a little way ahead
                break
            i += 1
        return None

    def _build(self, batch: _Batch, now: int) -> Frame | None:
        leaving: list[tuple[Envelope, bytes]] = []
        priority = Priority.BULK
        for env, enc in batch.items:
            self._bytes -= len(enc) + 3
            self._count[env.priority] -= 1
            if env.expires_us is not None and now >= env.expires_us:
                self.counters.expired[env.priority] += 1
                self._on_expired(env)
                continue
            leaving.append((env, enc))
            priority = min(priority, env.priority)
            self.counters.envelopes[env.priority] += 1
            self._on_sent(env, now)
        if not leaving:
            return None
        encoded = (self._finish(batch.destination, leaving) if self._finish is not None
                   else [enc for _, enc in leaving])
        data = encode_frame(encoded, compress=self.config.compress)
        self.counters.frames += 1
        self.counters.bytes += len(data)
        return Frame(batch.destination, data, len(leaving), priority)

    def next_deadline(self) -> int | None:
        """When ``pop_frames`` could next return something (``None``: nothing queued)."""
        earliest: int | None = None
        for queue in self._queues.values():
            for batch in queue:
                earliest = batch.ready_at if earliest is None else min(earliest, batch.ready_at)
                break
        for destination in self._aside:
            until = self._holds[destination]
            earliest = until if earliest is None else min(earliest, until)
        if earliest is None:
            return None
        return max(earliest, self.bucket.ready_at())

    def depth(self) -> dict[Priority, int]:
        """Envelopes waiting, per priority."""
        return dict(self._count)

    @property
    def queued_bytes(self) -> int:
        return self._bytes
