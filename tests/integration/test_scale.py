"""Scale, the short version of ``bench.scale``: two sites of 100 stations, each site a process
with its own Prosody, the cloud CSMS a process of its own; all joined and cached at the cloud;
then the cloud's broker is SIGKILLed while the stations tick, started again on the same state,
and every site rejoins through the cloud's admission limit until every copy is consistent
again. It asserts what happened, not how fast (the benchmark says that)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.scale import Run, measure

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    # an admission limit low enough to pace two sites: each comes back with its 100 ticking
    # stations changed (a join costing 101); the first runs the bucket 80 into debt, so the
    # second, arriving within the 4 s that takes to pay back, is told to wait
    return asyncio.run(measure(Run(sites=2, stations_per_site=100, tick_s=1.0, warmup_s=1.0,
                                   steady_s=3.0, outage_s=2.0, join_rate_per_s=20.0,
                                   join_burst=20.0, timeout_s=120.0)))


def test_every_station_is_online_and_cached_at_the_cloud(figures: dict[str, Any]) -> None:
    assert figures["stations"] == 200
    assert figures["online"] == 200
    assert figures["cached_at_cloud"] == 200


def test_the_cloud_applies_what_ticking_stations_publish(figures: dict[str, Any]) -> None:
    assert figures["updates_per_s_offered"] > 0
    assert figures["updates_per_s_sustained"] > 0
    assert all(figures["rss_mb"][kind] > 0 for kind in figures["rss_mb"])


def test_after_the_cloud_broker_restarts_every_site_rejoins_through_the_limit(
        figures: dict[str, Any]) -> None:
    # both sites came back (one join each at least), their changed copies were resynchronised,
    # and the one the bucket could not take at once was told to wait and came back
    assert figures["storm_joins"] >= 2
    assert figures["storm_resyncs"] > 0
    assert figures["storm_refused"] >= 1
    # within any second, never more admitted than the burst, one join's cost and the rate
    assert figures["storm_peak_join_cost_per_s"] <= 20 + 101 + 20


def test_every_site_restarted_on_its_state_comes_back_with_nothing_to_resynchronise(
        figures: dict[str, Any]) -> None:
    # the stations were paused: every copy at the cloud already is what its site announces
    assert figures["restart_joins"] >= 2
    assert figures["restart_resyncs"] == 0
    assert figures["online"] == figures["cached_at_cloud"] == 200
