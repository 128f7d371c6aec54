"""An example vendor extension: ACME's liquid-cooled power modules.

A vendor registers its namespace (a domain it owns, ``com.acme``) with its own types, then
attaches them where its products have them. The result sits in the tree as
``evse/1/power_module/com.acme:coolingLoop/...``: no collision with the standard model or with
another vendor's ``coolingLoop``, and a CSMS that does not know ACME still reads it generically.
"""

from __future__ import annotations

from typing import Annotated

from object_model.access import PropertyAccessKind as Access
from object_model.schema import Component, Namespace, SchemaRegistry, Unit
from object_model.types import float32, uint16

PREFIX = "com.acme"


class CoolingLoop(Component):
    """ACME liquid cooling loop of a DC power module."""

    pump_speed_rpm: Annotated[int, uint16(), Unit("rpm")] = 0
    inlet_temperature_c: Annotated[float, float32(-40, 150), Unit("°C")] = 25.0
    outlet_temperature_c: Annotated[float, float32(-40, 150), Unit("°C")] = 25.0
    flow_l_per_min: Annotated[float, float32(0, 100), Unit("l/min")] = 0.0
    pressure_bar: Annotated[float, float32(0, 20), Unit("bar")] = 1.5
    coolant_level_percent: Annotated[float, float32(0, 100), Unit("%")] = 100.0
    leak_detected: bool = False
    pump_setpoint_percent: Annotated[float, float32(0, 100), Unit("%"), Access.READ_WRITE] = 60.0


NAMESPACE = Namespace(PREFIX, "ACME Charging GmbH product extensions", {"CoolingLoop": CoolingLoop})
COOLING_LOOP = f"{PREFIX}:coolingLoop"


def install(registry: SchemaRegistry) -> None:
    """Attach ACME's extensions to a station schema that has the namespace registered."""
    registry.extend("evse/*/power_module", COOLING_LOOP, f"{PREFIX}:CoolingLoop")
