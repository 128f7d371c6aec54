"""A station's world for tests: its CSMS (a stub that admits it and records what it reports),
its store, its peers, on the in-memory network."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors.logic.firmware_trust import public_hex
from actors.runtime.actor import Actor, Context, RoleDirectory, handles
from actors.station.actor import ChargingStation, StationSettings
from actors.station.simulated import SimulatedStation, SimulatorSettings
from actors.station.tasks import TaskLimits
from actors.testing import World, until
from broker_bridge import Priority
from object_model import Role
from object_model.messages import JoinNetworkRequest, JoinNetworkResponse, PropertyValueUpdate
from object_model.monitoring import MonitoringReport

MANUFACTURER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
"""The key that signs the firmware the test station trusts."""

class Csms(Actor):
    """A CSMS that admits the station and records the reports it gets."""

    role = Role.LOCAL_CSMS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reports: list[tuple[MonitoringReport, Priority]] = []

    @handles(JoinNetworkRequest)
    async def on_join(self, message: JoinNetworkRequest, ctx: Context) -> JoinNetworkResponse:
        return JoinNetworkResponse(csms=self.address, heartbeat_s=30)

    @handles(PropertyValueUpdate)
    async def on_update(self, message: PropertyValueUpdate, ctx: Context) -> None:
        return None

    @handles(MonitoringReport)
    async def on_report(self, message: MonitoringReport, ctx: Context) -> None:
        self.reports.append((message, ctx.envelope.priority))

    def samples(self, task: str) -> list[Any]:
        return [s for r, _ in self.reports if r.task == task for s in r.samples]


def hardware(tick_s: float = 3600) -> SimulatedStation:
    """A simulated station that ticks once an hour unless told (tests tick it by hand)."""
    return SimulatedStation(SimulatorSettings(tick_s=tick_s))


class Site(World):
    """A station ``cs-1`` and its CSMS ``csms``."""

    csms: Csms | None = None

    async def start_csms(self) -> Csms:
        self.csms = await self.actor(Csms("csms", await self.endpoint("csms"),
                                          roles=RoleDirectory({"cs-*": Role.STATION})))
        return self.csms

    async def station(self, *, limits: TaskLimits | None = None,
                      trusted: dict[str, Role] | None = None) -> ChargingStation:
        store = await self.store("station")
        settings = StationSettings(csms="csms", publish_interval_s=0.05,
                                   tasks=limits or TaskLimits(install_s=0),
                                   trusted=trusted or {},
                                   firmware_keys=(public_hex(MANUFACTURER),))
        station = ChargingStation("cs-1", await self.endpoint("cs-1"), store=store,
                                  settings=settings, hardware=hardware())
        await station.start()
        self.stack.push_async_callback(station.stop)
        await until(lambda: station.admitted, "the station joined")
        return station

    async def restart(self, station: ChargingStation) -> ChargingStation:
        """The same station started again (after ``stop``) on its store and endpoint."""
        again = ChargingStation(station.address, self.endpoints[station.address],
                                store=station.store, settings=station.settings,
                                hardware=hardware())
        await again.start()
        self.stack.push_async_callback(again.stop)
        return again
