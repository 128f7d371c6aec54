"""What an uplink is like: its rates, bottleneck buffer, loss, delay and jitter."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkProfile:
    """The impairment of one site's uplink, applied in the site's router.

    ``None`` rates leave that direction unshaped; loss, delay and jitter apply in each direction.
    The bottleneck buffer is given in time at the direction's rate (``buffer_ms``, like tbf's
    ``latency``) or in bytes (``buffer_bytes``, tbf's ``limit``), not both.
    """

    up_bps: int | None = None  # site -> cloud, bits per second
    down_bps: int | None = None  # cloud -> site
    buffer_ms: float | None = 300.0
    buffer_bytes: int | None = None
    loss: float = 0.0  # probability that a packet is dropped, each way
    delay_ms: float = 0.0  # one way, each way
    jitter_ms: float = 0.0  # uniform in +-jitter around the delay; order is kept

    def __post_init__(self) -> None:
        for name in ("up_bps", "down_bps"):
            rate = getattr(self, name)
            if rate is not None and rate <= 0:
                raise ValueError(f"{name} must be positive or None, not {rate}")
        if (self.buffer_ms is None) == (self.buffer_bytes is None):
            raise ValueError("give exactly one of buffer_ms and buffer_bytes")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss is a probability in [0, 1), not {self.loss}")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay_ms and jitter_ms cannot be negative")

    @property
    def delays(self) -> bool:
        """Whether packets go through the userspace delayer."""
        return self.delay_ms > 0 or self.jitter_ms > 0


# Named profiles for the CLI and benchmarks. "reference" is NETWORK-FACTS.md's reference link.
PROFILES = {
    "clean": LinkProfile(),
    "reference": LinkProfile(up_bps=2_000_000, down_bps=8_000_000, buffer_ms=300, loss=0.01,
                             delay_ms=40, jitter_ms=10),
}
