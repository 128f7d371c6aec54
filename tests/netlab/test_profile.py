"""Link profiles refuse what tbf, nft and the delayer could not apply."""

from __future__ import annotations

import pytest

from bench.netlab import PROFILES, LinkProfile


@pytest.mark.parametrize("settings", [
    {"up_bps": 0}, {"down_bps": -1}, {"loss": 1.0}, {"loss": -0.1}, {"delay_ms": -1},
    {"jitter_ms": -1}, {"buffer_ms": 100, "buffer_bytes": 10_000}, {"buffer_bytes": 0},
])
def test_impossible_profiles_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LinkProfile(**settings)  # type: ignore[arg-type]


def test_the_buffer_is_time_by_default_or_bytes_when_given() -> None:
    assert LinkProfile(up_bps=1_000_000).tbf_buffer == ["latency", "300.0ms"]
    assert LinkProfile(up_bps=1_000_000, buffer_bytes=75_000).tbf_buffer == ["limit", "75000"]


def test_only_delay_or_jitter_needs_the_delayer() -> None:
    assert not LinkProfile(up_bps=2_000_000, loss=0.05).delays
    assert LinkProfile(jitter_ms=1).delays and PROFILES["reference"].delays
