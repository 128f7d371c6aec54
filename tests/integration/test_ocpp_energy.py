"""A site of OCPP chargers under the site's energy management, on real brokers: a power cut at
the resource manager becomes charging profiles the chargers confirm, lowered first and raised
after, and the site's metered power follows (the benchmark at 500 chargers:
``csms bench ocpp``, ``max_confirmed_over_site_w``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema_rs
import ocpp.v201
import pytest

from actors.app.config import ChargerEntry
from actors.app.hierarchy import Hierarchy
from actors.csms.settings import EnergySettings
from actors.station.actor import ChargingStation
from actors.testing import until
from actors.testing.ocpp_charger import SimulatedCharger
from keypath import KeyPath
from object_model.messages import PropertyValueWrite, WriteItem
from object_model.tree import TransactionCommitted

pytestmark = pytest.mark.broker

PASSWORD = "correct-horse-battery"
CHARGERS = [f"ocpp-site1-{i}" for i in range(1, 7)]
EVSE_DEMAND_W = 11_000.0
CUT_W = 40_000.0
INTERVAL_S = 1.0  # the site's allocation interval
REPORT_S = 0.5  # the chargers' meter interval


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[Hierarchy, list[SimulatedCharger]]]:
    h = await Hierarchy.start(tmp_path)
    chargers: list[SimulatedCharger] = []
    runners: list[asyncio.Task[None]] = []
    try:
        await h.start_cloud()
        await h.start_resource_manager(1, fuse_limit_w=400_000)
        await h.start_site(1, resource_manager=True,
                           energy=EnergySettings(interval_s=INTERVAL_S))
        _, gateway = await h.start_gateway(1, {identity: ChargerEntry(
            password=PASSWORD, evse_count=2) for identity in CHARGERS})
        chargers = [SimulatedCharger(identity, PASSWORD, gateway.url, evses=2, plugged=2,
                                     demand_w=EVSE_DEMAND_W, report_s=REPORT_S, seed=i)
                    for i, identity in enumerate(CHARGERS)]
        runners = [asyncio.create_task(c.run()) for c in chargers]
        yield h, chargers
    finally:
        for runner in runners:
            runner.cancel()
        for runner in runners:
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        await h.close()


def confirmed_w(stations: list[ChargingStation]) -> float:
    """The sum of the limits the chargers confirmed (``energy/limit_w``, written once the
    charger accepted the profile); an EVSE without one counts at its rating."""
    total = 0.0
    for station in stations:
        tree = station.tree
        assert tree is not None
        for evse in (1, 2):
            path = f"evse/{evse}/energy/limit_w"
            total += float(tree.get(path)) if path in tree and tree.is_leaf(path) else \
                float(tree.get(f"evse/{evse}/max_power_w"))
    return total


def metered_w(chargers: list[SimulatedCharger]) -> float:
    return sum(evse.power_w for charger in chargers for evse in charger.evses.values())


async def test_a_power_cut_at_the_rm_is_lowered_first_confirmed_and_followed(
        site: tuple[Hierarchy, list[SimulatedCharger]]) -> None:
    h, chargers = site
    await until(lambda: all(c.registration == "Accepted" for c in chargers), "all booted", 60)
    try:
        await until(lambda: metered_w(chargers) > 0.9 * len(CHARGERS) * 2 * EVSE_DEMAND_W,
                    "every EVSE charging at its demand", 30)
    except AssertionError:
        raise AssertionError([(c.identity, {e: (v.transaction, v.power_w, c.limit_w(v, c.now()))
                               for e, v in c.evses.items()}) for c in chargers]) from None
    stations = [s for s in h.site(1).stations if s.address in CHARGERS]
    before = confirmed_w(stations)
    assert before > CUT_W
    # every confirmed change, as it is committed at any charger's station
    sums: list[tuple[float, float]] = []  # (time, sum of confirmed limits)
    raised_while_over: list[str] = []

    def watch(station: ChargingStation) -> None:
        def changed(event: TransactionCommitted) -> None:
            if any(path.name == "limit_w" for path, _ in event.upserts):
                total = confirmed_w(stations)
                if sums and total > sums[-1][1] and total > CUT_W:
                    raised_while_over.append(station.address)
                sums.append((time.perf_counter(), total))

        assert station.tree is not None
        station.tree.subscribe(changed)

    for station in stations:
        watch(station)
    operator = await h.operator()
    start = time.time_ns() // 1000
    cut_at = time.perf_counter()
    await operator.request("rm-site1", PropertyValueWrite(writes=[WriteItem(
        path=KeyPath.parse("grid/curtailments/dso-1"),
        value={"start_at": start, "end_at": start + 3_600_000_000, "limit_w": CUT_W,
               "reason": "DSO curtailment"})]), timeout=5)
    await until(lambda: confirmed_w(stations) <= CUT_W, "every charger confirmed the cut", 20)
    confirmed_at = time.perf_counter()
    await until(lambda: metered_w(chargers) <= CUT_W, "the site's power follows", 20)
    followed_at = time.perf_counter()
    # a while at the new limit: the allocation keeps within it
    settle = time.perf_counter() + 3 * INTERVAL_S
    while time.perf_counter() < settle:
        assert confirmed_w(stations) <= CUT_W + 1e-6
        await asyncio.sleep(0.05)
    print(f"cut confirmed by every charger in {(confirmed_at - cut_at) * 1e3:.0f} ms, "
          f"power followed in {(followed_at - cut_at) * 1e3:.0f} ms")
    assert not raised_while_over, "a limit was raised before every lowering was confirmed"
    assert max(total for _, total in sums) <= before + 1e-6
    assert followed_at - cut_at <= INTERVAL_S + REPORT_S + 2.0  # + the round trips
    # every profile the chargers were sent is schema-valid
    schema = Path(ocpp.v201.__file__).parent / "schemas" / "SetChargingProfileRequest.json"
    validator = jsonschema_rs.validator_for(json.loads(schema.read_text()))
    profiles = [payload for c in chargers for action, payload in c.received
                if action == "SetChargingProfile"]
    assert len({(p["chargingProfile"]["id"], p["evseId"]) for p in profiles}) >= 2
    for payload in profiles:
        validator.validate(payload)
