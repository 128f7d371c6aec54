"""Heat in a simulated station: power modules, fans, ACME's cooling loop and the enclosure.

* A power module's temperature follows a first-order lag (time constant 7 minutes) towards
  ``ambient + 3 K + 30 K × loss / rated loss``, with 60 % more rise per failed fan. It derates
  (half power, state Derated) with a failed fan or above 75 °C, until it is back below 70 °C.
* Fans spin up with temperature: duty 0 % at 30 °C to 100 % at 60 °C. Their temperature
  sensors sit in the air stream, closer to the module's temperature when the fan has failed.
* ACME's cooling loop pumps at its setpoint scaled by load, and runs on while the module is
  hot; the coolant warms by loss / (69.8 W·min/(l·K) × flow).
* The enclosure's sensors follow the ambient (which swings daily), warmed by the modules, with
  noise; a heater keeps the enclosure above 3 °C.

The precise temperatures and fan hours live here; the tree holds them rounded, and a new model
starts from the tree's values.
"""

from __future__ import annotations

import math
import random

from actors.logic.station.changes import Drift, EvseLayout, TickChanges
from object_model.station.components import DeviceState
from object_model.station.vendor_acme import COOLING_LOOP

DAY_US = 86_400_000_000
TAU_S = 420.0
FULL_LOAD_RISE_K = 30.0
FAN_START_C, FAN_FULL_C = 30.0, 60.0
DERATE_ABOVE_C, DERATE_UNTIL_C = 75.0, 70.0


def ambient_c(mean_c: float, swing_c: float, now_us: int) -> float:
    """Outdoor temperature: ``mean_c`` with a daily swing of ``swing_c`` peaking at 15:00 UTC."""
    return mean_c + swing_c * math.sin(2 * math.pi * ((now_us % DAY_US) / DAY_US - 0.375))


class ThermalModel:
    """The temperatures of one station, stepped once per tick."""

    def __init__(self, w: TickChanges, layout: list[EvseLayout], enclosure_sensors: list[int],
                 ambient: float) -> None:
        self.module_c = {e.id: float(w.get(f"{e.p}power_module/temperature_c", ambient))
                         for e in layout}
        self._fan_hours = {(e.id, f): float(w.get(f"{e.p}power_module/fan/{f}/operating_hours",
                                                  0.0)) for e in layout for f, _ in e.fans}
        self._noise = {s: Drift(0.0, 0.15, 300.0, 0.0) for s in enclosure_sensors}

    def power_module(self, w: TickChanges, e: EvseLayout, power: float, loss: float,
                     ambient: float, dt_s: float) -> None:
        """Step one EVSE's power module, fans and cooling loop."""
        pm = f"{e.p}power_module/"
        failed = sum(w.get(f"{pm}fan/{f}/state") == DeviceState.FAULT for f, _ in e.fans)
        rating = max(1.0, w.get(f"{e.p}max_power_w", 1.0))
        rated_loss = rating * (0.045 if e.dc else 0.025)
        target = ambient + 3.0 + FULL_LOAD_RISE_K * (1.0 + 0.6 * failed) * loss / rated_loss
        t = self.module_c[e.id]
        t = self.module_c[e.id] = t + (target - t) * (1.0 - math.exp(-dt_s / TAU_S))
        w.report(pm + "temperature_c", max(-60.0, min(250.0, t)), 1)
        derating = failed > 0 or t > DERATE_ABOVE_C or (
            bool(w.get(pm + "derating_active")) and t > DERATE_UNTIL_C)
        w.set(pm + "derating_active", derating)
        w.set(pm + "state", DeviceState.DERATED if derating else DeviceState.RUNNING
              if power > 0 else DeviceState.STANDBY)
        duty = max(0, min(100, round((t - FAN_START_C) * 100.0 / (FAN_FULL_C - FAN_START_C))))
        for f, sensors in e.fans:
            fp = f"{pm}fan/{f}/"
            ok = w.get(fp + "state") != DeviceState.FAULT
            if ok:
                w.set(fp + "state", DeviceState.RUNNING if duty else DeviceState.STANDBY)
                if duty:
                    self._fan_hours[e.id, f] += dt_s / 3600.0
                    w.report(fp + "operating_hours", self._fan_hours[e.id, f], 2)
            w.set(fp + "duty_percent", duty)
            w.set(fp + "speed_rpm", 800 + 52 * duty if ok and duty else 0)
            for sensor in sensors:
                w.report(f"{fp}temperature_sensor/{sensor}/temperature_c",
                         max(-60.0, min(250.0, ambient + (t - ambient) * (0.55 if ok else 0.85))),
                         1)
        if e.cooling:
            self._cooling_loop(w, pm + COOLING_LOOP + "/", power / rating, loss, t, ambient)

    @staticmethod
    def _cooling_loop(w: TickChanges, cl: str, load: float, loss: float, module_c: float,
                      ambient: float) -> None:
        pumping = load > 0 or module_c > ambient + 8.0
        pump = w.get(cl + "pump_setpoint_percent", 60.0) * (0.5 + 0.5 * min(1.0, load))
        pump = pump if pumping else 0.0
        flow = w.report(cl + "flow_l_per_min", pump * 0.2, 1)
        w.set(cl + "pump_speed_rpm", int(round(pump * 42, -1)))
        w.report(cl + "pressure_bar", 1.5 + 0.012 * pump, 2)
        outlet = max(-40.0, min(150.0, ambient + (module_c - ambient) * 0.8))
        rise = loss / (69.8 * flow) if flow > 0 else 0.0
        w.report(cl + "outlet_temperature_c", outlet, 1)
        w.report(cl + "inlet_temperature_c", max(-40.0, outlet - rise), 1)

    def enclosure(self, w: TickChanges, rng: random.Random, ambient: float, dt_s: float) -> None:
        """Step the enclosure's sensors (reported with a 0.2 K deadband) and heater."""
        heat = 0.1 * sum(t - ambient for t in self.module_c.values())
        for sensor, noise in self._noise.items():
            t = ambient + 2.0 + heat + 0.4 * (sensor - 1) + noise.step(rng, dt_s)
            w.report(f"enclosure/temperature_sensor/{sensor}/temperature_c",
                     max(-60.0, min(250.0, t)), 1, band=0.2)
        if self._noise:
            first = w.get(f"enclosure/temperature_sensor/{min(self._noise)}/temperature_c")
            heater = bool(w.get("enclosure/heater_on"))
            w.set("enclosure/heater_on", first < 3.0 or (heater and first < 6.0))
