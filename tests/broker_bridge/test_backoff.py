"""The one retry policy: capped exponential growth, jitter within its floor, giving up."""

from __future__ import annotations

import random
from typing import Any

import pytest

from broker_bridge.backoff import Backoff


def test_the_ceiling_doubles_from_the_base_up_to_the_cap() -> None:
    policy = Backoff(base_s=0.5, cap_s=30.0)
    assert [policy.ceiling(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.ceiling(10_000) == 30.0  # no overflow however long the outage


def test_full_jitter_spreads_a_crowd_over_the_whole_ceiling() -> None:
    policy, rng = Backoff(base_s=1.0, cap_s=60.0), random.Random(7)
    delays = [policy.delay(7, rng) for _ in range(2000)]
    assert 0 <= min(delays) < 3 and 57 < max(delays) <= 60  # from ~0 to the cap
    assert 25 < sum(delays) / len(delays) < 35


def test_a_floor_keeps_a_lone_retrier_from_coming_straight_back() -> None:
    policy, rng = Backoff(base_s=1.0, cap_s=60.0, factor=4.0, floor=0.5), random.Random(1)
    for failures, ceiling in ((1, 1.0), (2, 4.0), (3, 16.0), (4, 60.0)):
        delays = [policy.delay(failures, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_the_same_seed_gives_the_same_delays() -> None:
    policy = Backoff(base_s=0.1, cap_s=30.0)
    first = [policy.delay(n, random.Random(3)) for n in range(1, 10)]
    assert first == [policy.delay(n, random.Random(3)) for n in range(1, 10)]


def test_attempts_say_when_to_give_up() -> None:
    assert not Backoff(base_s=1, cap_s=2).gives_up(10**6)
    policy = Backoff(base_s=1, cap_s=60, attempts=4)
    assert [policy.gives_up(n) for n in (1, 4, 5)] == [False, False, True]


@pytest.mark.parametrize("args", [dict(base_s=0, cap_s=1), dict(base_s=2, cap_s=1),
                                  dict(base_s=1, cap_s=2, factor=0.5),
                                  dict(base_s=1, cap_s=2, floor=1.5)])
def test_nonsense_is_refused(args: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Backoff(**args)
