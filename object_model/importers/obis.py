"""OBIS (IEC 62056-61, IEC TC13) registers as object-model values.

Meters identify their registers with OBIS codes ``A-B:C.D.E``; this importer maps a catalogue of
common codes to typed leaves in the ``obis`` namespace, so a fiscal meter appears in a tree as
``evse/1/meter/obis:1-0:1.8.0`` (active energy import, Wh) with its unit and range, instead of as a
vendor-specific name. Only the catalogue below is known; an unknown code is an error, so a typo
never becomes a new register.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, create_model

from object_model.access import PropertyAccessKind
from object_model.schema import Component, Namespace, Unit
from object_model.types import ValueType, float32, float64, string

PREFIX = "obis"


@dataclass(frozen=True)
class ObisRegister:
    code: str  # "1-0:1.8.0"
    name: str  # python-friendly field name
    title: str
    unit: str | None
    value_type: ValueType


def _r(code: str, name: str, title: str, unit: str | None, vt: ValueType) -> ObisRegister:
    return ObisRegister(code, name, title, unit, vt)


_E = float64(0, 1e15)  # energy registers, Wh: monotonic counters need double precision
CATALOGUE: dict[str, ObisRegister] = {
    r.code: r
    for r in (
        _r("1-0:1.8.0", "energy_import_wh", "Active energy import, total", "Wh", _E),
        _r("1-0:2.8.0", "energy_export_wh", "Active energy export, total", "Wh", _E),
        _r("1-0:3.8.0", "reactive_energy_import_varh", "Reactive energy import", "varh", _E),
        _r("1-0:1.7.0", "power_import_w", "Active power import", "W", float32(0, 1e7)),
        _r("1-0:2.7.0", "power_export_w", "Active power export", "W", float32(0, 1e7)),
        _r("1-0:16.7.0", "power_w", "Active power, sum (signed)", "W", float32(-1e7, 1e7)),
        _r("1-0:21.7.0", "power_l1_w", "Active power L1", "W", float32(-1e7, 1e7)),
        _r("1-0:41.7.0", "power_l2_w", "Active power L2", "W", float32(-1e7, 1e7)),
        _r("1-0:61.7.0", "power_l3_w", "Active power L3", "W", float32(-1e7, 1e7)),
        _r("1-0:32.7.0", "voltage_l1_v", "Voltage L1", "V", float32(0, 2000)),
        _r("1-0:52.7.0", "voltage_l2_v", "Voltage L2", "V", float32(0, 2000)),
        _r("1-0:72.7.0", "voltage_l3_v", "Voltage L3", "V", float32(0, 2000)),
        _r("1-0:31.7.0", "current_l1_a", "Current L1", "A", float32(-2000, 2000)),
        _r("1-0:51.7.0", "current_l2_a", "Current L2", "A", float32(-2000, 2000)),
        _r("1-0:71.7.0", "current_l3_a", "Current L3", "A", float32(-2000, 2000)),
        _r("1-0:14.7.0", "frequency_hz", "Supply frequency", "Hz", float32(40, 70)),
        _r("1-0:13.7.0", "power_factor", "Power factor", None, float32(-1, 1)),
        _r("0-0:96.1.0", "meter_serial", "Meter serial number", None, string(64)),
    )
}

NAMESPACE = Namespace(PREFIX, "OBIS codes (IEC 62056-61) for meter registers")


def segment(code: str) -> str:
    """The key-path segment of an OBIS code: ``obis:1-0:1.8.0``."""
    return f"{PREFIX}:{code}"


def meter_component(
    name: str,
    codes: list[str],
    *,
    doc: str = "",
    extra: dict[str, Any] | None = None,
    access: PropertyAccessKind = PropertyAccessKind.READ,
) -> type[Component]:
    """A component class whose fields are the given OBIS registers (optional, read-only by
    default), plus ``extra`` pydantic field definitions."""
    fields: dict[str, Any] = dict(extra or {})
    for code in codes:
        reg = CATALOGUE.get(code)
        if reg is None:
            raise KeyError(f"OBIS code {code!r} is not in the catalogue")
        meta: list[Any] = [reg.value_type, access]
        if reg.unit:
            meta.append(Unit(reg.unit))
        fields[reg.name] = (
            Annotated[Any, *meta] | None,
            Field(default=None, alias=segment(code), description=reg.title),
        )
    model = create_model(name, __base__=Component, __doc__=doc or name, **fields)
    return model
