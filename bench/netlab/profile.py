"""What an uplink is like: its rates, bottleneck buffer, loss, delay and jitter."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BUFFER_MS = 300.0  # NETWORK-FACTS.md's reference modem buffer


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkProfile:
    """The impairment of one site's uplink, applied in the site's router.

    ``None`` rates leave that direction unshaped; loss, delay and jitter apply in each direction.
    The bottleneck buffer of a shaped direction is given in time at that direction's rate
    (``buffer_ms``, tbf's ``latency``) or in bytes (``buffer_bytes``, tbf's ``limit``), not
    both; without either it holds `DEFAULT_BUFFER_MS`.
    """

    up_bps: int | None = None  # site -> cloud, bits per second
    down_bps: int | None = None  # cloud -> site
    buffer_ms: float | None = None
    buffer_bytes: int | None = None
    loss: float = 0.0  # probability that a packet is dropped, each way
    delay_ms: float = 0.0  # one way, each way
    jitter_ms: float = 0.0  # uniform in +-jitter around the delay; order is kept

    def __post_init__(self) -> None:
        for name in ("up_bps", "down_bps", "buffer_ms", "buffer_bytes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, not {value}")
        if self.buffer_ms is not None and self.buffer_bytes is not None:
            raise ValueError("give buffer_ms or buffer_bytes, not both")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss is a probability in [0, 1), not {self.loss}")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay_ms and jitter_ms cannot be negative")

    @property
    def delays(self) -> bool:
        """Whether packets go through the userspace delayer."""
        return self.delay_ms > 0 or self.jitter_ms > 0

    @property
    def tbf_buffer(self) -> list[str]:
        """The bottleneck buffer as tbf's arguments."""
        if self.buffer_bytes is not None:
            return ["limit", str(self.buffer_bytes)]
        return ["latency", f"{self.buffer_ms or DEFAULT_BUFFER_MS}ms"]


# Named profiles for the CLI and benchmarks. "reference" is NETWORK-FACTS.md's reference link.
PROFILES = {
    "clean": LinkProfile(),
    "reference": LinkProfile(up_bps=2_000_000, down_bps=8_000_000, buffer_ms=300, loss=0.01,
                             delay_ms=40, jitter_ms=10),
}
