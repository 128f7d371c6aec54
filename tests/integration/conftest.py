"""The real-broker hierarchy tests: stations live fast (a minute of site time per second)
unless a test says otherwise."""

from __future__ import annotations

from actors.logic.station.simulation import SimulationConfig
from actors.station.simulated import SimulatorSettings


def site_simulator(*, speed: float = 60.0, arrivals_per_evse_per_h: float = 3.0
                   ) -> SimulatorSettings:
    """A simulated station ticking twice a second at ``speed`` simulated seconds per
    second, with EVs arriving at each EVSE ``arrivals_per_evse_per_h`` times an hour."""
    return SimulatorSettings(tick_s=0.5, speed=speed, simulation=SimulationConfig(
        arrivals_per_evse_hour=arrivals_per_evse_per_h))
