"""The hierarchy over real, impaired uplinks: the short version of ``bench.hierarchy``.

A site in its own network namespace (its broker, resource manager, local CSMS and stations in
one process there) behind a router that shapes, delays and cuts its uplink; the cloud's broker
and the cloud CSMS here, in the root namespace. Skipped, with the reason printed, where
network namespaces cannot be made."""

from __future__ import annotations

import pytest

from bench.hierarchy import Run, measure
from bench.netlab import netns_available

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture(scope="module")
def figures() -> dict[str, object]:
    reason = netns_available()
    if reason is not None:
        pytest.skip(f"needs network namespaces: {reason}")
    import asyncio
    return asyncio.run(measure(Run(sites=1, stations=4, outage_s=30.0, samples=100,
                                   say=lambda message: None, prefix="ht")))


def test_one_connection_crosses_each_uplink(figures: dict[str, object]) -> None:
    assert figures["upstream_connections_per_site"] == 1
    assert figures["cached_at_cloud"] == 4


def test_a_site_cut_off_keeps_working_and_the_cloud_catches_up_exactly(
        figures: dict[str, object]) -> None:
    # admitted a new station, charged, allocated and obeyed its RM's curtailment while cut off
    assert figures["site_during_outage"] == {"charged": True, "allocated": True,
                                             "admitted": True, "curtailed": True}
    assert figures["consistent"] is True  # every cloud copy equals its station again
    assert figures["uplink_down_noticed"] is True  # within dead_after_s, not TCP's 15 min
    # a reliable stream across the cut: nothing lost, nothing twice, in order
    assert (figures["lost"], figures["duplicates"], figures["in_order"]) == (0, 0, True)


def test_critical_envelopes_overtake_bulk_on_a_saturated_uplink(
        figures: dict[str, object]) -> None:
    # the same link, the same bulk: with the queue in our session the critical envelopes
    # cross in about a round trip; with one FIFO queue they wait behind seconds of bulk
    ours, fifo = figures["critical_p50_ms_saturated_uplink"], figures[
        "critical_p50_ms_saturated_uplink_fifo"]
    assert isinstance(ours, float) and isinstance(fifo, float)
    assert ours * 3 < fifo, figures
