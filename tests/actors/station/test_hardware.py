"""The station hardware seam: a station actor on hardware that is not the simulator.

``Wallbox`` is the smallest ``StationHardware`` that still does what hardware does: one EVSE
that reports its power constraints and the power it draws, and draws less when an envelope
says so. The station actor around it joins a real local CSMS, publishes what the hardware
reports, refuses an envelope the EVSE cannot keep and obeys one it can, all without knowing
what is behind the seam."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from actors.csms.local import LocalCsms
from actors.csms.settings import EnergySettings, LocalSettings
from actors.station.actor import ChargingStation, StationSettings
from actors.station.hardware import Durable, HardwareFigures, Report, StationHardware
from actors.testing import World, until
from broker_bridge.pace import Pace
from keypath import KeyPath
from object_model import ErrorCode, ModelError, ObjectTree, Write
from object_model.messages import PropertyValueWrite, WriteItem
from object_model.pebc import (
    EnvelopeElement,
    PowerConstraints,
    PowerRange,
    PowerRangeEnvelope,
)
from object_model.station import new_station_tree
from object_model.tree import Operation, TransactionCommitted

POWER = "evse/1/meter/obis:1-0:16.7.0"
ENVELOPE = "evse/1/energy/envelope"
US = 1_000_000


class Wallbox:
    """One EVSE wanting ``demand_w``; it draws what its envelope allows."""

    def __init__(self, demand_w: float) -> None:
        self.demand_w = demand_w
        self.obeyed: list[int] = []  # revisions of the writes it acted on
        self._tree: ObjectTree | None = None
        self._report: Report | None = None
        self._stop = asyncio.Event()

    def initial_tree(self, address: str, now_us: int) -> ObjectTree:
        return new_station_tree(address, evse_count=1, now_us=now_us)

    def attach(self, tree: ObjectTree, report: Report, now_us: int, durable: Durable) -> None:
        self._tree, self._report = tree, report
        constraints = PowerConstraints(upper_ranges=[PowerRange(lower_w=0, upper_w=11_000)],
                                       lower_ranges=[PowerRange(lower_w=0, upper_w=0)])
        report([Write("evse/1/energy/power_constraints", constraints.model_dump()),
                Write(POWER, self.demand_w)])

    async def run(self, pace: Pace) -> None:
        await self._stop.wait()  # it reports only when something changes

    async def carry_out(self, ops: Sequence[Operation]) -> None:
        """It obeys what is applied: nothing to confirm."""

    def obey(self, event: TransactionCommitted) -> None:
        assert self._tree is not None and self._report is not None
        if not any(str(path).startswith(ENVELOPE) for path, _ in event.upserts):
            return
        envelope = PowerRangeEnvelope.model_validate(self._tree.get(ENVELOPE))
        element = envelope.at(envelope.elements[0].start_us)
        drawn = self.demand_w if element is None else min(self.demand_w, element.upper_w)
        self.obeyed.append(event.revision)
        ops: Sequence[Operation] = [Write(POWER, drawn)]
        self._report(ops)

    @property
    def figures(self) -> HardwareFigures:
        power = self._tree.get(POWER) if self._tree is not None else 0.0
        return HardwareFigures(charging=int(power > 0), power_w=power)


def envelope(upper_w: float, now_us: int) -> dict[str, object]:
    return PowerRangeEnvelope(end_us=now_us + 3600 * US, elements=[
        EnvelopeElement(start_us=now_us - 60 * US, lower_w=0, upper_w=upper_w)]).model_dump()


async def test_a_station_on_other_hardware_joins_publishes_and_obeys_an_envelope(
        world: World) -> None:
    wallbox = Wallbox(demand_w=11_000.0)
    hardware: StationHardware = wallbox  # the protocol, checked by mypy
    csms = await world.actor(LocalCsms(
        "local", await world.endpoint("local"), store=await world.store("local"),
        settings=LocalSettings(site="s", provisioning_secret="p",
                               energy=EnergySettings(enabled=False))))
    station = await world.actor(ChargingStation(
        "cs-1", await world.endpoint("cs-1"), store=await world.store("cs-1"),
        settings=StationSettings(csms="local", provisioning_secret="p", publish_interval_s=0.01),
        hardware=hardware))

    # joins, and what the hardware reported reaches the CSMS's copy
    await until(lambda: station.admitted, "the station joined")
    copies = csms.copies.replicas
    await until(lambda: "stations/cs-1" in copies and copies["stations/cs-1"].synced
                and copies["stations/cs-1"].tree.get(POWER) == 11_000.0,
                "the CSMS's copy shows the power the hardware reported")
    assert station.power_w == 11_000.0 and station.charging == 1

    # an envelope the EVSE cannot keep is refused before the hardware sees it
    now = station.clock.now_us()
    with pytest.raises(ModelError) as refused:
        await csms.request("cs-1", PropertyValueWrite(
            writes=[WriteItem(path=KeyPath.parse(ENVELOPE), value=envelope(20_000.0, now))]))
    assert refused.value.code is ErrorCode.OUT_OF_RANGE and wallbox.obeyed == []

    # one it can keep is obeyed at once, and the CSMS sees the station draw less
    answer = await csms.request("cs-1", PropertyValueWrite(
        writes=[WriteItem(path=KeyPath.parse(ENVELOPE), value=envelope(4_000.0, now))]))
    assert wallbox.obeyed == [answer.revision]  # type: ignore[attr-defined]
    assert station.tree is not None and station.tree.get(POWER) == 4_000.0
    await until(lambda: copies["stations/cs-1"].tree.get(POWER) == 4_000.0,
                "the copy shows the station obeying")
