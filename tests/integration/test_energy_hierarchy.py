"""Site energy management on the real broker: the resource manager, the local CSMS and 30 EVSEs
(15 stations), with the cloud in its own process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.app.hierarchy import Hierarchy, simulated
from actors.logic.station.ev import ElectricVehicle
from actors.logic.station.simulation import StationSimulator
from actors.station.actor import ChargingStation
from actors.testing import until
from keypath import KeyPath
from object_model.messages import PropertyValueRead, PropertyValueWrite, WriteItem
from object_model.station.components import ChargingProtocol
from tests.integration.conftest import site_simulator

POWER = "meter/obis:1-0:16.7.0"


@pytest.fixture
async def hierarchy(tmp_path: Path) -> AsyncIterator[Hierarchy]:
    h = await Hierarchy.start(tmp_path)
    try:
        yield h
    finally:
        await h.close()


def _ev(k: int, *, iso: bool, now_us: int, stay_h: float = 8.0, min_soc: float = 0.0
        ) -> ElectricVehicle:
    return ElectricVehicle(
        ev_id=f"EV{k:06d}" if iso else "", id_token=f"tok-{k}",
        protocol=ChargingProtocol.ISO15118_20 if iso else ChargingProtocol.IEC61851,
        battery_wh=80_000, phases=3, max_current_a=16.0, max_power_w=11_040.0, soc=0.2,
        target_soc=0.9, arrived_at=now_us, departure_at=now_us + int(stay_h * 3.6e9),
        min_soc=min_soc)


def _site_power(stations: list[ChargingStation]) -> float:
    return sum(s.tree.get(f"evse/{e}/{POWER}") for s in stations for e in (1, 2))  # type: ignore[union-attr]


def _limits(stations: list[ChargingStation]) -> list[float]:
    return [s.tree.get(f"evse/{e}/energy/limit_w") for s in stations for e in (1, 2)]  # type: ignore[union-attr]


async def test_a_curtailment_at_the_rm_reaches_all_30_evses_within_a_second_without_the_cloud(
        hierarchy: Hierarchy) -> None:
    h = hierarchy
    await h.spawn_cloud()
    await h.start_resource_manager(1, fuse_limit_w=400_000)
    await h.start_site(1, 15, resource_manager=True,
                       simulator=site_simulator(speed=1.0, arrivals_per_evse_per_h=0))
    stations = h.stations()
    now = time.time_ns() // 1000
    for i, station in enumerate(stations):
        for evse in (1, 2):
            simulator(station).plug_in(evse, _ev(2 * i + evse, iso=(i + evse) % 2 == 0,
                                                now_us=now))
    await until(lambda: _site_power(stations) > 25 * 10_000, "all 30 EVSEs charging", 30, every=0.2)
    before = _limits(stations)
    await h.kill_cloud()  # the site manages its energy on its own

    operator = await h.operator()
    start = time.time_ns() // 1000
    t0 = time.perf_counter()
    await operator.request("rm-site1", PropertyValueWrite(writes=[WriteItem(
        path=KeyPath.parse("grid/curtailments/dso-1"),
        value={"start_at": start, "end_at": start + 3_600_000_000, "limit_w": 90_000.0,
               "reason": "DSO curtailment"})]), timeout=5)

    def curtailed() -> bool:
        return _site_power(stations) <= 90_000 and all(
            new < old for new, old in zip(_limits(stations), before, strict=True))

    try:
        await until(curtailed, "the curtailment", timeout=10, every=0.005)
    except AssertionError:
        raise AssertionError(
            f"the curtailment never took effect: {_site_power(stations):.0f} W, limits "
            f"before {before}, now {_limits(stations)}") from None
    took = time.perf_counter() - t0
    print(f"curtailment to 90 kW took effect at all 30 EVSEs in {took * 1000:.0f} ms")
    assert took < 1.0
    assert sum(_limits(stations)) <= 90_000 + 1e-6
    local = h.site(1).local_csms
    assert local.own.tree.get("energy/limit_w") <= 90_000
    # and the resource manager heard the site's plan
    rm = h.site(1).resource_manager
    assert rm is not None
    await until(lambda: rm.tree.get("site/plan") is not None,
                "the site plan at the resource manager", 10, every=0.2)


async def test_an_infeasible_need_is_reported_to_the_rm_and_the_cloud(hierarchy: Hierarchy
                                                                       ) -> None:
    h = hierarchy
    await h.spawn_cloud()
    rm = await h.start_resource_manager(1, fuse_limit_w=200_000)
    await h.start_site(1, 2, resource_manager=True,
                       simulator=site_simulator(speed=1.0, arrivals_per_evse_per_h=0))
    now = time.time_ns() // 1000
    station = h.stations()[0]
    # 11 kW for half an hour cannot bring 80 kWh from 20 % to 70 %
    simulator(station).plug_in(1, _ev(1, iso=True, now_us=now, stay_h=0.5, min_soc=0.7))
    await until(lambda: rm.tree.get("site/alerts_total") > 0, "an alert at the RM", 20, every=0.2)
    alert = next(iter(rm.tree.read("site/alerts").values()))
    assert "energy_unreachable" in alert["codes"] and alert["evses"] >= 1
    operator = await h.operator()

    async def cloud_knows() -> bool:
        answer = await operator.request("cloud", PropertyValueRead(
            paths=[KeyPath.parse("sites/local-site1/energy_alerts")]), timeout=5)
        return answer.values[0][2] > 0  # type: ignore[attr-defined, no-any-return]

    await until(cloud_knows, "the alert at the cloud", 20, every=0.2)


def simulator(station: ChargingStation) -> StationSimulator:
    """The physics behind ``station`` (to plug EVs in by hand)."""
    sim = simulated(station).simulator
    assert sim is not None
    return sim
