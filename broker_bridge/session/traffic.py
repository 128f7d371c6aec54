"""What went through a session, counted for metrics: messages by kind and priority, and how long
delivered ones took.

Plain counters, updated on the hot path at the cost of a dict increment and read by whoever
exports them (``actors.app.metrics``, at scrape time); nothing here knows Prometheus.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

from broker_bridge.envelope import Priority
from broker_bridge.session.config import MS

# upper bounds of the latency buckets, in microseconds (the last bucket has none: +Inf)
LATENCY_BOUNDS_US: tuple[int, ...] = (
    1 * MS, 2 * MS + 500, 5 * MS, 10 * MS, 25 * MS, 50 * MS, 100 * MS, 250 * MS, 500 * MS,
    1_000 * MS, 2_500 * MS, 5_000 * MS, 10_000 * MS, 30_000 * MS)


class LatencyHistogram:
    """Counts of latencies per bucket (``counts[i]``: at most ``bounds[i]``, and more than the
    bound before; the last: more than every bound), and their sum."""

    __slots__ = ("bounds", "counts", "sum_us")

    def __init__(self, bounds: tuple[int, ...] = LATENCY_BOUNDS_US) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum_us = 0

    def observe(self, latency_us: int) -> None:
        latency_us = max(0, latency_us)  # the two ends' clocks may disagree a little
        self.counts[bisect_left(self.bounds, latency_us)] += 1
        self.sum_us += latency_us

    @property
    def count(self) -> int:
        return sum(self.counts)


def _histograms() -> dict[Priority, LatencyHistogram]:
    return {p: LatencyHistogram() for p in Priority}


@dataclass
class TrafficCounters:
    """``sent``: messages queued by ``Session.send`` (each once, whatever retransmissions and
    chunks it took; session acks and error reports included), by ``(kind, priority)``.
    ``received``: messages taken off the wire once each (delivered to an actor, or an ack the
    session consumed), by ``(kind, priority)``. ``latency``: per priority, from the sender's
    timestamp to delivery here (queueing, outbox, retransmissions and the broker included;
    across machines, their clocks' difference too)."""

    sent: Counter[tuple[str, Priority]] = field(default_factory=Counter)
    received: Counter[tuple[str, Priority]] = field(default_factory=Counter)
    latency: dict[Priority, LatencyHistogram] = field(default_factory=_histograms)
