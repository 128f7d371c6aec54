"""OCPP 2.0.1 meter values read into the station tree's OBIS registers (OCPP-NOTES §2.4).

Each ``sampledValue`` names a measurand (default: the active energy import register), a
phase, a context, a location and a unit with a multiplier; ``read`` turns a list of
``MeterValue`` into one ``Reading`` per timestamp: values by key-path below ``evse/<e>/meter``,
in the tree's units (Wh, W, V, A, Hz), with the energy register and power found apart. Only
Outlet samples (the default location) are an EVSE's; an energy register given per phase only
is summed (a total, when there is one, wins); units and multipliers are applied, so a charger
reporting kWh with multiplier 0 and one reporting Wh agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from object_model.tree import ObjectTree, Operation, Write

ENERGY = "Energy.Active.Import.Register"
BEGIN, END = "Transaction.Begin", "Transaction.End"

# (measurand, phase) -> OBIS register below evse/<e>/meter
REGISTERS: dict[tuple[str, str | None], str] = {
    (ENERGY, None): "obis:1-0:1.8.0",
    ("Energy.Active.Export.Register", None): "obis:1-0:2.8.0",
    ("Power.Active.Import", None): "obis:1-0:16.7.0",
    ("Power.Active.Import", "L1"): "obis:1-0:21.7.0",
    ("Power.Active.Import", "L2"): "obis:1-0:41.7.0",
    ("Power.Active.Import", "L3"): "obis:1-0:61.7.0",
    ("Voltage", "L1-N"): "obis:1-0:32.7.0",
    ("Voltage", "L2-N"): "obis:1-0:52.7.0",
    ("Voltage", "L3-N"): "obis:1-0:72.7.0",
    ("Current.Import", "L1"): "obis:1-0:31.7.0",
    ("Current.Import", "L2"): "obis:1-0:51.7.0",
    ("Current.Import", "L3"): "obis:1-0:71.7.0",
    ("Frequency", None): "obis:1-0:14.7.0",
    ("Power.Factor", None): "obis:1-0:13.7.0",
}
SCALE = {"Wh": 1.0, "kWh": 1e3, "W": 1.0, "kW": 1e3, "V": 1.0, "A": 1.0, "Hz": 1.0,
         "varh": 1.0, "kvarh": 1e3, "var": 1.0, "kvar": 1e3, "Percent": 1.0}


def micros(text: str) -> int:
    """An OCPP ``dateTime`` (RFC 3339) as microseconds since the epoch (``ValueError``)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} names no time zone")
    return int(moment.timestamp() * 1_000_000)


@dataclass
class Reading:
    """What one ``MeterValue`` (one timestamp) says."""

    at_us: int
    registers: dict[str, float] = field(default_factory=dict)  # OBIS name -> value
    energy_wh: float | None = None
    power_w: float | None = None
    soc_percent: float | None = None
    contexts: set[str] = field(default_factory=set)


def _value(sample: dict[str, Any]) -> float:
    unit = sample.get("unitOfMeasure") or {}
    scale = SCALE.get(unit.get("unit", ""), 1.0) * 10.0 ** int(unit.get("multiplier", 0))
    return float(sample["value"]) * scale


def read(meter_values: list[dict[str, Any]]) -> list[Reading]:
    """The readings of ``meter_values`` (schema-valid), oldest first."""
    readings = []
    for meter_value in meter_values:
        reading = Reading(micros(meter_value["timestamp"]))
        phases: dict[str, float] = {}
        for sample in meter_value.get("sampledValue", []):
            if sample.get("location", "Outlet") != "Outlet":
                continue
            measurand = sample.get("measurand", ENERGY)
            phase = sample.get("phase")
            value = _value(sample)
            reading.contexts.add(sample.get("context", "Sample.Periodic"))
            if measurand == "SoC":
                reading.soc_percent = value
                continue
            if measurand == ENERGY and phase is not None:
                phases[phase] = value
                continue
            register = REGISTERS.get((measurand, phase))
            if register is not None:
                reading.registers[register] = value
        if ENERGY_REGISTER not in reading.registers and phases:
            reading.registers[ENERGY_REGISTER] = sum(phases.values())
        reading.energy_wh = reading.registers.get(ENERGY_REGISTER)
        reading.power_w = reading.registers.get(POWER_REGISTER)
        readings.append(reading)
    readings.sort(key=lambda r: r.at_us)
    return readings


ENERGY_REGISTER = REGISTERS[(ENERGY, None)]
POWER_REGISTER = REGISTERS[("Power.Active.Import", None)]


def live_ops(tree: ObjectTree, evse: int, reading: Reading) -> list[Operation]:
    """``reading`` into EVSE ``evse``'s live leaves (its meter's registers, the session's
    power and state of charge), unless the meter shows a newer reading already
    (``meter/last_reading_at``): a sample replayed late never moves live state back."""
    base = f"evse/{evse}"
    shown = f"{base}/meter/last_reading_at"
    if shown in tree and tree.is_leaf(shown) and int(tree.get(shown) or 0) > reading.at_us:
        return []
    ops: list[Operation] = [Write(f"{base}/meter/{name}", value)
                            for name, value in reading.registers.items()
                            if f"{base}/meter/{name}" in tree]
    if shown in tree:
        ops.append(Write(shown, reading.at_us))
    if reading.power_w is not None and f"{base}/session/power_w" in tree:
        ops.append(Write(f"{base}/session/power_w", reading.power_w))
    if reading.soc_percent is not None and f"{base}/session/soc_percent" in tree:
        ops.append(Write(f"{base}/session/soc_percent", reading.soc_percent))
    return ops

__all__ = ["BEGIN", "END", "ENERGY", "ENERGY_REGISTER", "POWER_REGISTER", "REGISTERS",
           "Reading", "live_ops", "micros", "read"]
