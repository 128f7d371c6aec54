"""The pace: loop lag in, a stretch of the periodic work out, with hysteresis (time passed in);
and the endpoint that measures the lag."""

from __future__ import annotations

import time

import pytest

from actors.testing import FakeClock, until
from broker_bridge import Endpoint
from broker_bridge.endpoint import LAG_PROBE_S
from broker_bridge.memory import MemoryNetwork
from broker_bridge.pace import Pace, PaceChanged, PaceSettings

SETTINGS = PaceSettings(high_lag_s=0.2, low_lag_s=0.05, settle_s=2.0, calm_s=10.0,
                        max_stretch=8, smoothing=1.0)  # no smoothing: each sample counts whole


def feed(pace: Pace, lag_s: float, start: float, seconds: float, every: float = 0.25
         ) -> tuple[float, list[PaceChanged]]:
    """Samples of ``lag_s`` every ``every`` seconds from ``start`` for ``seconds``; the time
    reached and the changes made."""
    changes, now = [], start
    while now < start + seconds:
        now += every
        change = pace.observe(lag_s, now)
        if change is not None:
            changes.append(change)
    return now, changes


def test_on_time_it_stays_at_one() -> None:
    pace = Pace(SETTINGS)
    _, changes = feed(pace, 0.01, 0.0, 60.0)
    assert pace.stretch == 1 and not pace.behind and changes == []
    assert pace.max_lag_s == pytest.approx(0.01)


def test_a_lagging_loop_doubles_the_stretch_once_per_settle_time_up_to_the_cap() -> None:
    pace = Pace(SETTINGS)
    now, changes = feed(pace, 0.5, 0.0, 1.0)
    assert [(c.before, c.after) for c in changes] == [(1, 2)]  # at once (0.25 s), then it settles
    now, changes = feed(pace, 0.5, now, 1.0)
    assert changes == []  # within settle_s of the last change: it holds
    now, changes = feed(pace, 0.5, now, 30.0)
    assert [(c.before, c.after) for c in changes] == [(2, 4), (4, 8)]
    assert pace.stretch == 8 and pace.coarsened == 3 and pace.behind


def test_it_comes_back_one_halving_per_calm_period_and_a_lag_restarts_the_count() -> None:
    pace = Pace(SETTINGS)
    now, _ = feed(pace, 0.5, 0.0, 10.0)
    assert pace.stretch == 8
    now, changes = feed(pace, 0.0, now, 9.0)
    assert changes == []  # not calm for long enough yet
    now, _ = feed(pace, 0.1, now, 1.0)  # neither calm nor lagging: holds, and the count restarts
    now, changes = feed(pace, 0.0, now, 9.5)
    assert changes == [] and pace.stretch == 8
    now, changes = feed(pace, 0.0, now, 31.0)
    assert [(c.before, c.after) for c in changes] == [(8, 4), (4, 2), (2, 1)]
    assert pace.relaxed == 3 and not pace.behind


def test_the_lag_is_smoothed() -> None:
    pace = Pace(PaceSettings(smoothing=0.5))
    pace.observe(0.0, 0.25)
    assert pace.observe(0.3, 0.5) is None  # one late timer: 0.15 smoothed, under 0.2
    assert pace.observe(0.3, 0.75) is not None  # still late: 0.225
    assert pace.stretch == 2


def test_settings_must_make_sense() -> None:
    with pytest.raises(ValueError, match="not a pace"):
        PaceSettings(high_lag_s=0.05, low_lag_s=0.1)


async def test_the_endpoint_measures_how_late_the_loop_runs_its_timers() -> None:
    # in the loop's own time: a fake clock moved by hand is not a lagging loop
    clock, pace = FakeClock(), Pace(SETTINGS)
    endpoint = await Endpoint(MemoryNetwork().transport(), clock=clock, name="host",
                              pace=pace).start()
    try:
        await until(lambda: pace.samples >= 2, "the probe measured", 5)
        clock.advance(3600)  # an hour of fake time: no lag
        await until(lambda: pace.samples >= 4, "the probe measured again", 5)
        assert pace.max_lag_s < 1.0  # the hour did not count
        time.sleep(3 * LAG_PROBE_S)  # not a wait: the loop stalls, as under a CPU-bound burst
        await until(lambda: pace.max_lag_s >= 2 * LAG_PROBE_S, "the stall measured", 5)
        assert pace.stretch >= 2
    finally:
        await endpoint.stop(flush_timeout=0.1)
