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
from actors.station.hardware import Durable, HardwareFigures, Report
from broker_bridge.clock import WALL_CLOCK, Clock
from broker_bridge.pace import Pace
from object_model.station import new_station_tree
from object_model.tree import ObjectTree, Operation, TransactionCommitted

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
