"""One operator's command to a site's stations crosses the uplink once, on real brokers.

Two sites, each with its own Prosody, and the cloud CSMS as a process of its own on the cloud's
Prosody. The operator asks the cloud for one write to every station of site 1
(``FanOutRequest``): the local CSMS's uplink carries one request down and one gathered answer up
(its session's own counters, by message kind), its site link carries one write per station,
every station of site 1 holds the value and no station of site 2 does. A write the operator has
no right to is refused by the cloud, station by station, and never reaches the site.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.app.hierarchy import Hierarchy
from actors.testing import until
from broker_bridge import Endpoint
from keypath import KeyPath
from object_model import ErrorCode
from object_model.messages import (
    FanOutRequest,
    FanOutResponse,
    PropertyValueWrite,
    WriteItem,
)

pytestmark = pytest.mark.broker

LIMIT = "evse/1/permissions/max_power_w"


@pytest.fixture
async def hierarchy(tmp_path: Path) -> AsyncIterator[Hierarchy]:
    h = await Hierarchy.start(tmp_path, sites=2)
    try:
        await h.spawn_cloud()
        await h.start_site(1, 6, paused=True)
        await h.start_site(2, 3, paused=True)
        await until(h.cloud_consistent, "the cloud's copies of both sites", 60, every=0.2)
        yield h
    finally:
        await h.close()


def kinds(endpoint: Endpoint, way: str) -> Counter[str]:
    """Messages ``endpoint``'s session sent or received so far, by kind."""
    counted: Counter[str] = Counter()
    for (kind, _), n in getattr(endpoint.session.traffic, way).items():
        counted[kind] += n
    return counted


def write(path: str, value: object) -> PropertyValueWrite:
    return PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse(path), value=value)])


async def test_a_command_to_a_sites_stations_crosses_its_uplink_once(hierarchy: Hierarchy
                                                                     ) -> None:
    h = hierarchy
    local = h.site(1).local_csms
    uplink, site_link = local.links.endpoint_for("cloud"), local.links.default
    assert uplink is not site_link
    down, up, on_site = kinds(uplink, "received"), kinds(uplink, "sent"), kinds(site_link, "sent")
    operator = await h.operator()

    answer = await operator.request("cloud", FanOutRequest(
        site="local-site1", item=write(LIMIT, 7000.0)), timeout=30)

    assert isinstance(answer, FanOutResponse)
    site1 = [s.address for s in h.site(1).stations]
    assert [r.station for r in answer.results] == sorted(site1)
    assert all(r.error is None and r.text.startswith("changed") for r in answer.results), (
        answer.results)
    came_down = kinds(uplink, "received") - down
    assert came_down["FanOutRequest"] == 1 and came_down["PropertyValueWrite"] == 0
    assert (kinds(uplink, "sent") - up)["FanOutResponse"] == 1
    assert (kinds(site_link, "sent") - on_site)["PropertyValueWrite"] == len(site1)
    for station in h.site(1).stations:
        assert station.tree is not None and station.tree.get(LIMIT) == 7000.0
    for station in h.site(2).stations:
        assert station.tree is not None and station.tree.get(LIMIT) != 7000.0
    # and the cloud's copies learn it the usual way, by the stations' updates
    await until(h.cloud_consistent, "the cloud's copies after the fan-out", 30, every=0.2)


async def test_a_fan_out_outside_the_operators_rights_stops_at_the_cloud(hierarchy: Hierarchy
                                                                        ) -> None:
    h = hierarchy
    uplink = h.site(1).local_csms.links.endpoint_for("cloud")
    down = kinds(uplink, "received")
    before = {s.address: s.tree.digest() for s in h.stations() if s.tree is not None}
    operator = await h.operator()

    answer = await operator.request("cloud", FanOutRequest(
        site="local-site1", item=write("evse/1/phases", 1)), timeout=30)

    assert isinstance(answer, FanOutResponse) and len(answer.results) == 6
    assert {r.error for r in answer.results} == {ErrorCode.ACCESS_DENIED}
    assert kinds(uplink, "received")["FanOutRequest"] == down["FanOutRequest"]
    assert {s.address: s.tree.digest() for s in h.stations() if s.tree is not None} == before
