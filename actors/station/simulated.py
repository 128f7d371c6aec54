"""The simulator as a station's hardware: the first ``StationHardware``.

``StationSimulator`` (``actors.logic.station.simulation``) is the physics, pure; this is its
clockwork. Every ``tick_s`` seconds of the clock it advances the simulation by ``tick_s *
speed`` simulated seconds (never behind the clock's wall time: when that is the site's time,
as in the demo, an envelope made for "now" finds the station there too) and reports the tick
as one transaction. A CSMS's write that changes what an EVSE may draw (permissions, an
envelope) is obeyed at once: the simulation ticks again at the same simulated time.

While the process cannot keep up (its ``Pace`` is stretched), a tick covers ``stretch``
ticks' worth of time, once every ``stretch`` ticks: the simulation is coarser, the station's
state still follows the clock, and the work (and the commits, publications and copies that
follow from each tick) falls by as much. ``ticks_coarsened`` counts the ticks folded so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import field_validator

from actors.logic.station.simulation import SimulationConfig, StationSimulator
from actors.runtime.settings import Settings, positive
from actors.station.hardware import (
    Durable,
    FirmwareImage,
    HardwareFigures,
    OperationAnswer,
    Progress,
    Report,
)
from broker_bridge.clock import WALL_CLOCK, Clock
from broker_bridge.pace import Pace
from object_model.errors import InvalidStateError, UnknownPathError, UnsupportedOperationError
from object_model.monitoring import MonitoringTaskSetup
from object_model.operations import OperationKind, RemoteOperation
from object_model.station import new_station_tree
from object_model.station.components import SessionState
from object_model.tree import ObjectTree, Operation, TransactionCommitted, Write

log = logging.getLogger("csms.station.simulated")


class SimulatorSettings(Settings):
    """How a simulated station is built and how fast it lives: ``speed`` is simulated seconds
    per second of the clock (the demo makes an hour pass in a minute); ``simulation`` is its
    world (EVs, faults, weather) and its seed."""

    evse_count: int = 2
    dc: bool = False
    tick_s: float = 1.0
    speed: float = 1.0
    simulation: SimulationConfig = SimulationConfig()

    _positive = field_validator("tick_s", "speed")(positive)

    @field_validator("evse_count")
    @classmethod
    def _evses(cls, value: int) -> int:
        if not 1 <= value <= 16:
            raise ValueError(f"must be 1 to 16, got {value}")
        return value

    @field_validator("simulation")
    @classmethod
    def _world(cls, value: SimulationConfig) -> SimulationConfig:
        if value.arrivals_per_evse_hour < 0:
            raise ValueError(f"arrivals_per_evse_hour must be 0 or more, got "
                             f"{value.arrivals_per_evse_hour}")
        return value


RUNNING = frozenset(state.value for state in (
    SessionState.AUTHORISING, SessionState.CHARGING, SessionState.DISCHARGING,
    SessionState.SUSPENDED))
"""Session states in which a connector stays locked."""


class SimulatedStation:
    """A simulated station's hardware (see the module docstring). ``paused`` stops its
    ticks (the tree then holds still, for tests that compare copies)."""

    def __init__(self, settings: SimulatorSettings | None = None, *,
                 clock: Clock = WALL_CLOCK) -> None:
        self.settings = settings or SimulatorSettings()
        self.clock = clock
        self.paused = False
        self.simulator: StationSimulator | None = None
        self._report: Report | None = None
        self._now_us = 0
        self.ticks_coarsened = 0

    def initial_tree(self, address: str, now_us: int) -> ObjectTree:
        return new_station_tree(address, evse_count=self.settings.evse_count,
                                dc=self.settings.dc, now_us=now_us)

    def attach(self, tree: ObjectTree, report: Report, now_us: int,
               durable: Durable | None = None) -> None:
        self.simulator = StationSimulator(tree, self.settings.simulation, now_us=now_us)
        self._report, self._now_us = report, now_us

    async def run(self, pace: Pace) -> None:
        tick_s = self.settings.tick_s
        step_us = int(tick_s * self.settings.speed * 1e6)
        while True:
            stretch = pace.stretch
            await self.clock.sleep(tick_s * stretch)
            if not self.paused:
                self.ticks_coarsened += stretch - 1
                self.tick(max(self._now_us + step_us * stretch, self.clock.now_us()))

    @property
    def simulated_us(self) -> int:
        """The simulated time the station has reached (µs since the epoch)."""
        return self._now_us

    def tick(self, now_us: int | None = None) -> TransactionCommitted | None:
        """Advance the simulation to ``now_us`` (default: where it is, to obey what was just
        written) and report it as one transaction."""
        assert self.simulator is not None and self._report is not None, "attach first"
        self._now_us = max(self._now_us, self._now_us if now_us is None else now_us)
        ops = self.simulator.tick(self._now_us)
        return self._report(ops) if ops else None

    async def carry_out(self, ops: Sequence[Operation]) -> None:
        """A simulated station obeys what is applied (``obey``): nothing to confirm."""

    def obey(self, event: TransactionCommitted) -> None:
        if self.paused or not controls(event):
            return
        try:
            self.tick()  # obey it now, not at the next tick
        except Exception:  # the write stands; the next tick will try again
            log.exception("the tick after a write failed")

    async def operate(self, operation: RemoteOperation) -> OperationAnswer:
        """What a simulated station can do on request: restart (its boot counters; its EVs
        stay), take an EV at an EVSE (it arrives at the next tick), unlock a connector with
        no session on its EVSE, change availability. It has no remote stop and nothing to
        trigger (it publishes every change anyway): those are refused as unsupported."""
        assert self.simulator is not None and self._report is not None, "attach first"
        tree = self.simulator.tree
        kind, evse = operation.operation, operation.evse
        if evse and f"evse/{evse}/status" not in tree:
            raise UnknownPathError(f"this station has no EVSE {evse}", path=f"evse/{evse}")
        if kind is OperationKind.RESET:
            boots = int(tree.get("diagnostics/boot_count") or 0)
            self._report([Write("diagnostics/boot_count", boots + 1),
                          Write("diagnostics/last_boot_reason", "RemoteReset"),
                          Write("diagnostics/uptime", 0)])
            return OperationAnswer("Accepted")
        if kind is OperationKind.START_CHARGING:
            chosen = evse or next((e for e in sorted(int(k) for k in tree.read("evse"))
                                   if e not in self.simulator.evs), None)
            if chosen is None or chosen in self.simulator.evs:
                raise InvalidStateError("no free EVSE to start charging on",
                                        details={"evse": chosen})
            self.simulator.plug_in(chosen)
            self.tick()
            return OperationAnswer("Accepted")
        if kind is OperationKind.UNLOCK_CONNECTOR:
            path = f"evse/{evse}/connector/{operation.connector}/locked"
            if path not in tree:
                raise UnknownPathError(f"EVSE {evse} has no connector {operation.connector}",
                                       path=path)
            if tree.get(f"evse/{evse}/session/state") in RUNNING:
                raise InvalidStateError(f"a session runs on EVSE {evse}: stop it first",
                                        details={"answer": "OngoingAuthorizedTransaction"})
            self._report([Write(path, False)])
            return OperationAnswer("Unlocked")
        if kind is OperationKind.CHANGE_AVAILABILITY:
            base = f"evse/{evse}/" if evse else ""
            self._report([Write(f"{base}permissions/may_charge", operation.operative)])
            self.tick()
            return OperationAnswer("Accepted")
        raise UnsupportedOperationError(
            f"a simulated station does not {kind.value.replace('_', ' ')}"
            + (" (it publishes every change anyway)" if kind is OperationKind.TRIGGER_MESSAGE
               else ""), details={"operation": kind.value})

    async def install(self, image: FirmwareImage, progress: Progress) -> str:
        """Simulated: the install takes ``image.install_s``, then the station runs it."""
        progress(0.0, f"installing {image.version}")
        await self.clock.sleep(image.install_s)
        return image.version

    async def watch(self, task: str, setup: MonitoringTaskSetup | None) -> str:
        return ""  # its whole tree is measured all the time

    @property
    def figures(self) -> HardwareFigures:
        sim = self.simulator
        if sim is None:
            return HardwareFigures()
        return HardwareFigures(charging=len(sim.charging_evses), power_w=sim.power_w,
                               energy_wh=sim.energy_wh_delivered)


def controls(event: TransactionCommitted) -> bool:
    """Whether ``event`` changed what an EVSE may draw: an envelope or permissions, or a
    delete above them (of ``evse/1``, say)."""
    def near(segs: tuple[str, ...]) -> bool:
        return "permissions" in segs or "envelope" in segs

    return any(near(path.segments) for path, _ in event.upserts) or any(
        near(path.segments) or (path.segments[:1] in ((), ("evse",)) and len(path.segments) <= 3)
        for path in event.deletes)


__all__ = ["SimulatedStation", "SimulatorSettings", "controls"]
