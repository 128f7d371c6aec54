"""The delayer's schedule on a fake clock: delay within bounds, order kept, seeded."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from bench.netlab.delay import DelayLine, JitteredDelay


def _line(delay_s: float, jitter_s: float, seed: int = 1) -> DelayLine[int]:
    return DelayLine(JitteredDelay(delay_s, jitter_s, random.Random(seed)))


@given(gaps=st.lists(st.floats(0, 0.05), min_size=1, max_size=200), seed=st.integers())
def test_releases_keep_arrival_order_and_never_come_early(gaps: list[float], seed: int) -> None:
    line = _line(0.050, 0.010, seed)
    now, arrivals, releases = 0.0, [], []
    for gap in gaps:
        now += gap
        arrivals.append(now)
        releases.append(line.admit(len(arrivals), now))
    assert releases == sorted(releases)
    # Held behind an earlier packet that drew more delay, but that one arrived earlier still:
    # order costs no packet more than the largest delay.
    assert all(a + 0.040 <= r <= a + 0.060 + 1e-9
               for a, r in zip(arrivals, releases, strict=True))


def test_due_hands_out_items_in_order_once_their_time_has_come() -> None:
    line = _line(0.5, 0.0)
    line.admit("a", 0.0)
    line.admit("b", 0.25)
    assert line.next_release() == 0.5
    assert line.due(0.25) == []
    assert line.due(1.0) == [(0.5, "a"), (0.75, "b")]
    assert line.next_release() is None and len(line) == 0


def test_jitter_is_seeded() -> None:
    first, second = _line(0.05, 0.01, seed=7), _line(0.05, 0.01, seed=7)
    assert [first.admit(i, i * 0.1) for i in range(50)] == [second.admit(i, i * 0.1)
                                                            for i in range(50)]


def test_drain_lets_everything_go_in_order() -> None:
    line = _line(1.0, 0.5)
    for item in range(10):
        line.admit(item, item * 0.001)
    assert line.drain() == list(range(10))
    assert line.max_held == 10 and line.admitted == 10
