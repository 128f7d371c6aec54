"""Session settings: one frozen object, passed down explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker_bridge.envelope import Priority

MS = 1_000
SECOND = 1_000_000


def _default_windows() -> dict[Priority, int]:
    # critical envelopes never wait for company; bulk waits a little longer to share frames
    return {Priority.CRITICAL: 0, Priority.CONTROL: 1 * MS, Priority.STATE: 3 * MS,
            Priority.BULK: 5 * MS}


@dataclass(frozen=True)
class SessionConfig:
    """Everything the session needs to know; times in microseconds, sizes in bytes.

    ``frame_bytes``: the largest frame handed to the transport (10 to 64 kB; small embedded
    stations use 10-16 kB). Bigger envelopes are chunked.
    ``rate_bytes_per_s``: the link's budget; ``None`` means only the transport's back-pressure
    limits sending. On a rate-limited link, state and bulk frames are kept to
    ``max_frame_delay_us`` of link time (at least 1 kB), because a critical envelope can never
    overtake the frame already on the wire: a 32 kB bulk frame is 64 ms at 500 kB/s.
    ``bulk_frame_bytes`` caps state and bulk frames whatever the rate (at least 1 kB): on a
    slow link without a known rate, a critical envelope still waits for the frame already
    handed to the kernel (32 kB is 128 ms at 2 Mbit/s).
    ``priorities=False`` makes the queue plain FIFO (for comparisons). ``compress`` deflates
    frames when that saves a tenth or more (see ``codec``).
    ``durable``: reliable envelopes wait for ``mark_persisted`` before they may leave, and acks
    wait for ``mark_receipts_persisted`` (the outbox's handshake); off for in-memory use.
    """

    frame_bytes: int = 32 * 1024
    rate_bytes_per_s: float | None = None
    burst_bytes: int = 64 * 1024
    max_frame_delay_us: int = 2 * MS
    bulk_frame_bytes: int | None = None
    priorities: bool = True
    compress: bool = True
    batch_windows_us: dict[Priority, int] = field(default_factory=_default_windows)
    batch_max_envelopes: int = 512
    max_queued_bytes: int = 32 * 1024 * 1024
    durable: bool = False
    retransmit_initial_us: int = 1 * SECOND
    retransmit_max_us: int = 30 * SECOND
    ack_delay_us: int = 2 * MS
    ack_batch: int = 256
    reorder_max_envelopes: int = 4096  # waiting in one stream's reorder buffer
    reorder_max_bytes: int = 64 * 1024 * 1024  # waiting in every stream's, together
    max_in_streams: int = 200_000  # reliable streams received, from every sender together
    max_in_streams_per_pair: int = 256  # from one sender to one local actor
    gap_timeout_us: int = 60 * SECOND
    reassembly_timeout_us: int = 30 * SECOND
    reassembly_max_bytes_per_peer: int = 32 * 1024 * 1024
    reassembly_max_bytes: int = 128 * 1024 * 1024  # every peer's partial messages together
    reassembly_max_messages: int = 4096  # partial messages held, from every peer together
    reassembly_max_messages_per_peer: int = 64  # from one sender (a room counts as one)
    max_message_bytes: int = 16 * 1024 * 1024
    dedupe_window: int = 100_000
    error_reports_per_s: float = 20.0
    seed: int | None = None

    def frame_limit(self, priority: Priority) -> int:
        """The largest frame for envelopes of ``priority`` (see ``max_frame_delay_us``)."""
        if priority <= Priority.CONTROL:
            return self.frame_bytes
        limit = self.frame_bytes
        if self.bulk_frame_bytes is not None:
            limit = min(limit, max(1024, self.bulk_frame_bytes))
        if self.rate_bytes_per_s is not None:
            by_rate = int(self.rate_bytes_per_s * self.max_frame_delay_us / 1e6)
            limit = max(1024, min(limit, by_rate))
        return limit

    def __post_init__(self) -> None:
        if not 10 * 1024 <= self.frame_bytes <= 64 * 1024:
            raise ValueError(f"frame_bytes must be 10 to 64 kB, not {self.frame_bytes}")
        if self.rate_bytes_per_s is not None and self.rate_bytes_per_s <= 0:
            raise ValueError("rate_bytes_per_s must be positive (or None for unlimited)")
        if self.retransmit_initial_us <= 0 or self.retransmit_max_us < self.retransmit_initial_us:
            raise ValueError("retransmit times must be positive and max >= initial")
